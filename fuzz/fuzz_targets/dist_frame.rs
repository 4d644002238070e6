//! Arbitrary bytes through the 4-byte framing, headers, atom cache and
//! fragment reassembly under small limits, then control-message decoding:
//! no panic, bounded buffering.
#![no_main]

use erlkube_proto::dist::frame::{Frame, FrameDecoder, InboundDecoder, Limits, OutboundEncoder};
use erlkube_proto::dist::{DistFlags, DistMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_frame_len: 1 << 16, max_message_len: 1 << 18, max_in_flight: 8 };
    let flags = [DistFlags::DEFAULT, DistFlags::MANDATORY_25, DistFlags::DIST_HDR_ATOM_CACHE];
    for f in flags {
        let mut frames = FrameDecoder::new(limits.max_frame_len);
        let mut inbound = InboundDecoder::new(f, limits);
        frames.push(data);
        while let Ok(Some(frame)) = frames.next_frame() {
            if let Frame::Data(body) = frame {
                match inbound.decode(body) {
                    Ok(Some(m)) => {
                        assert!(m.data.len() <= limits.max_message_len.max(limits.max_frame_len));
                        // Control message and payload decoding: errors, never panics.
                        let _ = DistMessage::decode(&m);
                    }
                    Ok(None) => assert!(inbound.in_flight() <= limits.max_in_flight),
                    Err(_) => break,
                }
            }
        }
    }

    // Round trip: whatever we encode, we decode back to the same bytes.
    if data.len() >= 2 {
        let control = [&[131u8][..], &data[..data.len() / 2]].concat();
        let payload = [&[131u8][..], &data[data.len() / 2..]].concat();
        let mut enc = OutboundEncoder::new(DistFlags::DEFAULT);
        enc.set_fragment_size(1 + data[0] as usize);
        let mut out = Vec::new();
        enc.encode(&control, Some(&payload), &mut out);
        let mut frames = FrameDecoder::new(usize::MAX);
        let mut inbound = InboundDecoder::new(DistFlags::DEFAULT, Limits::default());
        frames.push(&out);
        let mut got = None;
        while let Some(Frame::Data(body)) = frames.next_frame().unwrap() {
            if let Some(m) = inbound.decode(body).unwrap() {
                got = Some(m.data);
            }
        }
        assert_eq!(got.unwrap(), [&control[1..], &payload[1..]].concat());
    }
});
