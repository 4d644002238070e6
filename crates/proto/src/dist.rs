//! Distribution protocol: handshake, framing, control messages.
