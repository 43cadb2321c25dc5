//! Proof that a media stream belongs to a call this deployment answered.
//!
//! Twilio signs the media WebSocket's handshake over its URL only, and that
//! URL is the same for every call, so one handshake seen is enough to open
//! as many streams as one likes. The voice webhook therefore hands Twilio a
//! `<Parameter>` named [`STREAM_TOKEN_PARAMETER`] whose value is
//! HMAC-SHA256(auth token, CallSid); Twilio echoes it in `start`'s
//! `customParameters`, and the bridge accepts a `start` only with the token
//! of its own `callSid`. The token is stateless, so any instance behind a
//! load balancer can check a token another instance issued, and it binds
//! the stream to one call: a token seen once opens no other call.
//!
//! ```
//! use voxproxy_adapters::stream_token::StreamTokenKey;
//!
//! let key = StreamTokenKey::new("auth-token").unwrap();
//! let token = key.token("CA0123456789abcdef0123456789abcdef");
//! assert!(key.verify("CA0123456789abcdef0123456789abcdef", &token));
//! assert!(!key.verify("CA0123456789abcdef0123456789abcdee", &token));
//! ```

use core::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The `<Parameter>` name that carries the token. It is removed from the
/// custom parameters before anything reports them (records, control API, events).
pub const STREAM_TOKEN_PARAMETER: &str = "voxproxy_stream_token";

/// Length of a token: 32 bytes of HMAC-SHA256 as lower-case hex.
pub const STREAM_TOKEN_LEN: usize = 64;

/// The key tokens are made and checked with (derived from the auth token).
#[derive(Clone)]
pub struct StreamTokenKey {
    keyed: HmacSha256,
}

impl fmt::Debug for StreamTokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StreamTokenKey(<redacted>)")
    }
}

/// Two keys are equal when they make the same tokens; the comparison looks
/// at a MAC, never at the secret.
impl PartialEq for StreamTokenKey {
    fn eq(&self, other: &Self) -> bool {
        self.mac("") == other.mac("")
    }
}

impl Eq for StreamTokenKey {}

impl StreamTokenKey {
    /// A key for `auth_token`; `None` when it is empty (no secret, no proof).
    #[must_use]
    pub fn new(auth_token: &str) -> Option<Self> {
        if auth_token.is_empty() {
            return None;
        }
        // A domain label keeps these MACs apart from any other use of the token.
        let mut keyed = HmacSha256::new_from_slice(auth_token.as_bytes()).ok()?;
        keyed.update(b"voxproxy stream token v1\0");
        Some(StreamTokenKey { keyed })
    }

    fn mac(&self, call_sid: &str) -> [u8; 32] {
        let mut mac = self.keyed.clone();
        mac.update(call_sid.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The token for `call_sid`: [`STREAM_TOKEN_LEN`] lower-case hex digits.
    #[must_use]
    pub fn token(&self, call_sid: &str) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(STREAM_TOKEN_LEN);
        for byte in self.mac(call_sid) {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        out
    }

    /// Whether `token` is the token of `call_sid`, compared in constant time.
    #[must_use]
    pub fn verify(&self, call_sid: &str, token: &str) -> bool {
        let Some(given) = decode_hex(token) else { return false };
        let mut mac = self.keyed.clone();
        mac.update(call_sid.as_bytes());
        mac.verify_slice(&given).is_ok()
    }
}

fn decode_hex(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != STREAM_TOKEN_LEN {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CALL: &str = "CA0123456789abcdef0123456789abcdef";

    #[test]
    fn a_token_is_bound_to_its_call_and_its_key() {
        let key = StreamTokenKey::new("secret").unwrap();
        let token = key.token(CALL);
        assert_eq!(token.len(), STREAM_TOKEN_LEN);
        assert!(key.verify(CALL, &token));
        assert!(!key.verify("CA0123456789abcdef0123456789abcdee", &token));
        assert!(!StreamTokenKey::new("other").unwrap().verify(CALL, &token));
        assert!(!key.verify(CALL, &token.to_uppercase()), "only the canonical spelling");
        assert!(!key.verify(CALL, ""));
        assert!(!key.verify(CALL, &token[..62]));
    }

    #[test]
    fn an_empty_auth_token_makes_no_key_and_debug_hides_it() {
        assert!(StreamTokenKey::new("").is_none());
        assert_eq!(StreamTokenKey::new("secret"), StreamTokenKey::new("secret"));
        assert_ne!(StreamTokenKey::new("secret"), StreamTokenKey::new("other"));
        assert_eq!(format!("{:?}", StreamTokenKey::new("secret").unwrap()), "StreamTokenKey(<redacted>)");
    }

    proptest! {
        #[test]
        fn tokens_round_trip_and_no_flipped_digit_passes(call in "CA[0-9a-f]{32}", at in 0usize..64) {
            let key = StreamTokenKey::new("secret").unwrap();
            let token = key.token(&call);
            prop_assert!(key.verify(&call, &token));
            let mut forged = token.into_bytes();
            forged[at] = if forged[at] == b'0' { b'1' } else { b'0' };
            prop_assert!(!key.verify(&call, core::str::from_utf8(&forged).unwrap()));
        }
    }
}
