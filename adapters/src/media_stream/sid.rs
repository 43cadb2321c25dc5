//! Twilio SIDs as small inline values: no lifetime, no allocation, `Copy`.
//!
//! A Twilio SID is a two-letter prefix and 32 hex digits (`MZ` streams, `CA`
//! calls, `AC` accounts). Messages are accepted liberally: any non-empty text
//! of up to [`MAX_SID_LEN`] printable ASCII characters other than `"` and `\`.
//! That bound keeps the value inline, and the character set lets SIDs be
//! copied into JSON, URLs and log lines without escaping. Whether a SID has
//! Twilio's exact shape is a separate question, answered by
//! `is_twilio_format`.

use core::fmt;

/// Longest SID accepted, in bytes. Twilio's are 34.
pub const MAX_SID_LEN: usize = 64;

/// Why a text is not a usable SID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SidError {
    /// The text is empty.
    Empty,
    /// The text is longer than [`MAX_SID_LEN`].
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The text has a byte outside printable ASCII, or `"` or `\`.
    InvalidByte {
        /// Offset of the byte.
        offset: usize,
        /// The byte.
        byte: u8,
    },
}

impl fmt::Display for SidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SidError::Empty => f.write_str("SID is empty"),
            SidError::TooLong { len } => write!(f, "SID is {len} bytes long, more than {MAX_SID_LEN}"),
            SidError::InvalidByte { offset, byte } => write!(
                f,
                "SID has byte 0x{byte:02x} at offset {offset}; only printable ASCII other than '\"' and '\\' is allowed"
            ),
        }
    }
}

impl core::error::Error for SidError {}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct SidText {
    len: u8,
    bytes: [u8; MAX_SID_LEN],
}

impl SidText {
    fn new(text: &str) -> Result<Self, SidError> {
        Self::from_ascii(text.as_bytes())
    }

    /// Validates and copies raw bytes: the rules admit only ASCII, so no
    /// separate UTF-8 check is needed.
    fn from_ascii(src: &[u8]) -> Result<Self, SidError> {
        let allowed = |b: u8| b.is_ascii_graphic() & (b != b'"') & (b != b'\\');
        if src.is_empty() {
            return Err(SidError::Empty);
        }
        if src.len() > MAX_SID_LEN {
            return Err(SidError::TooLong { len: src.len() });
        }
        // A fold without early exit: the compiler can check many bytes at once.
        if !src.iter().fold(true, |ok, &b| ok & allowed(b)) {
            let (offset, &byte) = src.iter().enumerate().find(|&(_, &b)| !allowed(b)).unwrap_or((0, &0));
            return Err(SidError::InvalidByte { offset, byte });
        }
        let mut bytes = [0u8; MAX_SID_LEN];
        bytes[..src.len()].copy_from_slice(src);
        Ok(SidText { len: src.len() as u8, bytes })
    }

    fn as_str(&self) -> &str {
        // Only ASCII is ever stored, so this never fails.
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }

    fn is_twilio_format(&self, prefix: &str) -> bool {
        let s = self.as_str();
        s.len() == 34
            && s.starts_with(prefix)
            && s.bytes().skip(2).all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
}

macro_rules! sid_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(SidText);

        impl $name {
            /// The two letters every SID of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// Takes `text` as a SID if it is non-empty, at most
            /// [`MAX_SID_LEN`] bytes, and printable ASCII other than `"` and `\`.
            ///
            /// # Errors
            /// [`SidError`] says which rule `text` breaks.
            pub fn new(text: &str) -> Result<Self, SidError> {
                SidText::new(text).map($name)
            }

            /// [`new`](Self::new) for raw bytes, which the rules confine to ASCII.
            ///
            /// # Errors
            /// [`SidError`] says which rule `bytes` breaks.
            pub fn from_bytes(bytes: &[u8]) -> Result<Self, SidError> {
                SidText::from_ascii(bytes).map($name)
            }

            /// The SID's text.
            #[must_use]
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }

            /// Whether the SID has Twilio's exact shape: the prefix followed by
            /// 32 lower-case hex digits.
            #[must_use]
            pub fn is_twilio_format(&self) -> bool {
                self.0.is_twilio_format($prefix)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.as_str())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl core::str::FromStr for $name {
            type Err = SidError;
            fn from_str(text: &str) -> Result<Self, SidError> {
                Self::new(text)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

sid_type!(
    /// Identifies one media stream (`MZ…`); the key of a session.
    StreamSid,
    "MZ"
);
sid_type!(
    /// Identifies one call (`CA…`).
    CallSid,
    "CA"
);
sid_type!(
    /// Identifies the Twilio account (`AC…`).
    AccountSid,
    "AC"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_twilio_shaped_and_other_printable_sids() {
        let sid = StreamSid::new("MZ0123456789abcdef0123456789abcdef").unwrap();
        assert!(sid.is_twilio_format());
        assert_eq!(sid, "MZ0123456789abcdef0123456789abcdef");
        assert_eq!(sid.to_string(), "MZ0123456789abcdef0123456789abcdef");

        let liberal = StreamSid::new("stream-1").unwrap();
        assert!(!liberal.is_twilio_format());
        assert_eq!(liberal.as_str(), "stream-1");
    }

    #[test]
    fn twilio_format_checks_prefix_length_and_hex() {
        assert!(!CallSid::new("MZ0123456789abcdef0123456789abcdef").unwrap().is_twilio_format());
        assert!(CallSid::new("CA0123456789abcdef0123456789abcdef").unwrap().is_twilio_format());
        assert!(!CallSid::new("CA0123456789abcdef0123456789abcde").unwrap().is_twilio_format());
        assert!(!CallSid::new("CA0123456789ABCDEF0123456789abcdef").unwrap().is_twilio_format());
        assert!(!AccountSid::new("ACg123456789abcdef0123456789abcdef").unwrap().is_twilio_format());
        assert!(AccountSid::new("AC0123456789abcdef0123456789abcdef").unwrap().is_twilio_format());
    }

    #[test]
    fn rejects_empty_long_and_unprintable() {
        assert_eq!(StreamSid::new(""), Err(SidError::Empty));
        assert_eq!(StreamSid::new(&"a".repeat(65)), Err(SidError::TooLong { len: 65 }));
        assert!(StreamSid::new(&"a".repeat(64)).is_ok());
        assert_eq!(StreamSid::new("MZ 1"), Err(SidError::InvalidByte { offset: 2, byte: b' ' }));
        assert_eq!(StreamSid::new("MZ\"1"), Err(SidError::InvalidByte { offset: 2, byte: b'"' }));
        assert_eq!(StreamSid::new("M\\"), Err(SidError::InvalidByte { offset: 1, byte: b'\\' }));
        assert_eq!(StreamSid::new("MZé"), Err(SidError::InvalidByte { offset: 2, byte: 0xC3 }));
    }
}
