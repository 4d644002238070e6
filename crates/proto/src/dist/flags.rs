//! Distribution capability flags (`DFLAG_*`), exchanged in the handshake.

use std::fmt;
use std::ops::{BitAnd, BitOr, BitOrAssign, Not};

/// A set of distribution flags as sent in the handshake (64 bits).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DistFlags(pub u64);

macro_rules! flags {
    ($($(#[$doc:meta])* $name:ident = $value:expr;)*) => {
        impl DistFlags {
            $($(#[$doc])* pub const $name: DistFlags = DistFlags($value);)*

            /// Every flag with a name, in bit order, for printing.
            const NAMED: &'static [(&'static str, u64)] = &[$((stringify!($name), $value),)*];
        }
    };
}

flags! {
    /// The node is visible (published); absent for hidden nodes.
    PUBLISHED = 0x01;
    /// Old atom cache (obsolete).
    ATOM_CACHE = 0x02;
    /// Extended (multi-word) references. Mandatory since OTP 25.
    EXTENDED_REFERENCES = 0x04;
    /// Remote process monitors.
    DIST_MONITOR = 0x08;
    /// FUN_EXT tags. Mandatory since OTP 25.
    FUN_TAGS = 0x10;
    /// Monitors of registered names.
    DIST_MONITOR_NAME = 0x20;
    /// Atom cache for hidden connections.
    HIDDEN_ATOM_CACHE = 0x40;
    /// NEW_FUN_EXT. Mandatory since OTP 25.
    NEW_FUN_TAGS = 0x80;
    /// Extended pids and ports. Mandatory since OTP 25.
    EXTENDED_PIDS_PORTS = 0x100;
    /// EXPORT_EXT. Mandatory since OTP 25.
    EXPORT_PTR_TAG = 0x200;
    /// BIT_BINARY_EXT. Mandatory since OTP 25.
    BIT_BINARIES = 0x400;
    /// NEW_FLOAT_EXT. Mandatory since OTP 25.
    NEW_FLOATS = 0x800;
    /// Unicode io requests.
    UNICODE_IO = 0x1000;
    /// Atom cache in the distribution header.
    DIST_HDR_ATOM_CACHE = 0x2000;
    /// SMALL_ATOM_EXT.
    SMALL_ATOM_TAGS = 0x4000;
    /// UTF-8 atoms. Mandatory since OTP 25.
    UTF8_ATOMS = 0x1_0000;
    /// MAP_EXT. Mandatory since OTP 25.
    MAP_TAG = 0x2_0000;
    /// 32-bit creation (NEW_PID_EXT, NEWER_REFERENCE_EXT). Mandatory since OTP 25.
    BIG_CREATION = 0x4_0000;
    /// SEND_SENDER control message.
    SEND_SENDER = 0x8_0000;
    /// Large sequential trace labels.
    BIG_SEQTRACE_LABELS = 0x10_0000;
    /// PAYLOAD_EXIT* control messages.
    EXIT_PAYLOAD = 0x40_0000;
    /// Fragmented messages (131 'E' / 131 'F').
    FRAGMENTS = 0x80_0000;
    /// The OTP 23 handshake (`N` messages). Mandatory since OTP 25.
    HANDSHAKE_23 = 0x100_0000;
    /// UNLINK_ID / UNLINK_ID_ACK. Mandatory since OTP 26.
    UNLINK_ID = 0x200_0000;
    /// Shorthand for every flag in [`DistFlags::MANDATORY_25`] (OTP 25+).
    MANDATORY_25_DIGEST = 0x400_0000;
    /// SPAWN_REQUEST / SPAWN_REPLY.
    SPAWN = 1 << 32;
    /// Dynamic node name (the acceptor names the initiator).
    NAME_ME = 2 << 32;
    /// Pids and ports with 64-bit ids (NEW_PID_EXT / V4_PORT_EXT). Mandatory since OTP 26.
    V4_NC = 4 << 32;
    /// ALIAS_SEND and process aliases.
    ALIAS = 8 << 32;
}

impl DistFlags {
    /// No flags.
    pub const EMPTY: DistFlags = DistFlags(0);

    /// The flags OTP 25 requires of a peer.
    pub const MANDATORY_25: DistFlags = DistFlags(
        Self::EXTENDED_REFERENCES.0
            | Self::FUN_TAGS.0
            | Self::EXTENDED_PIDS_PORTS.0
            | Self::NEW_FUN_TAGS.0
            | Self::EXPORT_PTR_TAG.0
            | Self::BIT_BINARIES.0
            | Self::NEW_FLOATS.0
            | Self::UTF8_ATOMS.0
            | Self::MAP_TAG.0
            | Self::BIG_CREATION.0
            | Self::HANDSHAKE_23.0,
    );

    /// The flags OTP 26 and 27 require of a peer: [`DistFlags::MANDATORY_25`]
    /// plus V4_NC and UNLINK_ID.
    pub const MANDATORY_26: DistFlags =
        DistFlags(Self::MANDATORY_25.0 | Self::V4_NC.0 | Self::UNLINK_ID.0);

    /// What an erlkube node offers by default: every mandatory bit set
    /// individually plus MANDATORY_25_DIGEST, monitors (both kinds), spawn,
    /// alias, unicode io, small atom tags, fragments, the header atom cache,
    /// and PUBLISHED. Clear PUBLISHED for a hidden node.
    pub const DEFAULT: DistFlags = DistFlags(
        Self::MANDATORY_26.0
            | Self::MANDATORY_25_DIGEST.0
            | Self::PUBLISHED.0
            | Self::DIST_MONITOR.0
            | Self::DIST_MONITOR_NAME.0
            | Self::SPAWN.0
            | Self::ALIAS.0
            | Self::UNICODE_IO.0
            | Self::SMALL_ATOM_TAGS.0
            | Self::FRAGMENTS.0
            | Self::DIST_HDR_ATOM_CACHE.0
            | Self::EXIT_PAYLOAD.0
            | Self::SEND_SENDER.0
            | Self::BIG_SEQTRACE_LABELS.0,
    );

    /// The raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// True when every flag of `other` is set in `self`.
    pub const fn contains(self, other: DistFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// True when any flag of `other` is set in `self`.
    pub const fn intersects(self, other: DistFlags) -> bool {
        self.0 & other.0 != 0
    }

    /// `self` without the flags of `other`.
    pub const fn without(self, other: DistFlags) -> DistFlags {
        DistFlags(self.0 & !other.0)
    }

    /// The peer's flags as OTP reads them: MANDATORY_25_DIGEST stands for
    /// every flag of [`DistFlags::MANDATORY_25`].
    pub const fn expand_digest(self) -> DistFlags {
        if self.0 & Self::MANDATORY_25_DIGEST.0 != 0 {
            DistFlags(self.0 | Self::MANDATORY_25.0)
        } else {
            self
        }
    }

    /// The flags of `required` missing from `self` (after expanding the digest).
    pub const fn missing(self, required: DistFlags) -> DistFlags {
        DistFlags(required.0 & !self.expand_digest().0)
    }

    /// True for a visible (published) node.
    pub const fn is_published(self) -> bool {
        self.contains(Self::PUBLISHED)
    }

    /// Frames after the handshake carry a distribution header (131 'D' / 'E' / 'F')
    /// and unversioned terms, rather than pass-through (112) and versioned terms.
    pub const fn uses_dist_header(self) -> bool {
        self.intersects(DistFlags(Self::DIST_HDR_ATOM_CACHE.0 | Self::FRAGMENTS.0))
    }
}

impl BitOr for DistFlags {
    type Output = DistFlags;
    fn bitor(self, rhs: DistFlags) -> DistFlags {
        DistFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for DistFlags {
    fn bitor_assign(&mut self, rhs: DistFlags) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for DistFlags {
    type Output = DistFlags;
    fn bitand(self, rhs: DistFlags) -> DistFlags {
        DistFlags(self.0 & rhs.0)
    }
}

impl Not for DistFlags {
    type Output = DistFlags;
    fn not(self) -> DistFlags {
        DistFlags(!self.0)
    }
}

/// Prints the flag names joined by `|`, unnamed bits in hex.
impl fmt::Display for DistFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        let mut first = true;
        for (name, bit) in Self::NAMED {
            if rest & bit != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
                rest &= !bit;
            }
        }
        if rest != 0 || first {
            if !first {
                f.write_str("|")?;
            }
            write!(f, "{rest:#x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DistFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DistFlags({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_match_otp_dist_hrl() {
        assert_eq!(DistFlags::V4_NC.bits(), 1 << 34);
        assert_eq!(DistFlags::UNLINK_ID.bits(), 0x200_0000);
        assert_eq!(DistFlags::MANDATORY_25_DIGEST.bits(), 0x400_0000);
        assert_eq!(DistFlags::SPAWN.bits(), 1 << 32);
        assert_eq!(DistFlags::ALIAS.bits(), 1 << 35);
        assert_eq!(DistFlags::MANDATORY_25.bits(), 0x0107_0f94);
    }

    #[test]
    fn digest_stands_for_mandatory_25() {
        let only_digest = DistFlags::MANDATORY_25_DIGEST;
        assert_eq!(
            only_digest.missing(DistFlags::MANDATORY_25),
            DistFlags::EMPTY
        );
        assert_eq!(
            only_digest.missing(DistFlags::MANDATORY_26),
            DistFlags::V4_NC | DistFlags::UNLINK_ID
        );
        assert!(DistFlags::DEFAULT.missing(DistFlags::MANDATORY_26).bits() == 0);
    }

    #[test]
    fn display_names_flags() {
        let f = DistFlags::PUBLISHED | DistFlags::V4_NC | DistFlags(1 << 60);
        assert_eq!(f.to_string(), "PUBLISHED|V4_NC|0x1000000000000000");
        assert_eq!(DistFlags::EMPTY.to_string(), "0x0");
    }
}
