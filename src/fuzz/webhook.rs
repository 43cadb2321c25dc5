//! Webhook bodies and X-Twilio-Signature inputs.

use voxproxy_adapters::form::{Form, FormError, MAX_BODY_BYTES};
use voxproxy_adapters::signature::{SignatureValidator, compute_signature};
use voxproxy_adapters::webhook::{
    CallStatusCallback, MAX_RECORDING_URL_LEN, RecordingStatusCallback, StreamStatusCallback, VoiceWebhook,
};

/// A webhook body: parse it as a form; a form that parses re-encodes to a
/// body that parses to the same fields; each webhook type then converts it
/// without panicking (a recording status keeps its text fields bounded),
/// and a body good enough for a call status callback is good enough for a
/// voice webhook with the same call fields.
pub fn form_body(data: &[u8]) {
    let Ok(form) = Form::parse(data) else { return };
    let encoded = form.encode();
    let reparsed = Form::parse(encoded.as_bytes());
    if encoded.len() <= MAX_BODY_BYTES {
        assert_eq!(reparsed.as_ref(), Ok(&form), "encode then parse changed the fields");
    } else {
        // Percent-encoding can grow a body past the limit; nothing else may fail.
        assert_eq!(reparsed, Err(FormError::TooLarge { len: encoded.len() }));
    }

    let voice = VoiceWebhook::from_form(form.clone());
    let status = CallStatusCallback::from_form(form.clone());
    if let Ok(status) = &status {
        let voice = voice.as_ref().expect("a valid status callback is a valid voice webhook");
        assert_eq!(voice.call, status.call);
    }
    let recording = RecordingStatusCallback::from_form(form.clone());
    if let Ok(recording) = &recording {
        // What lands in a call record stays bounded whatever was sent.
        assert!(recording.recording_url.as_ref().is_none_or(|u| u.len() <= MAX_RECORDING_URL_LEN));
        assert!(recording.recording_status.len() <= 32);
    }
    let errors = [voice.err(), status.err(), StreamStatusCallback::from_form(form).err(), recording.err()];
    for err in errors.into_iter().flatten() {
        let _ = err.to_string();
    }
}

/// Auth token used by [`signature_inputs`]; any non-empty token will do.
const FUZZ_TOKEN: &str = "fuzz-auth-token";

/// Public base URLs [`signature_inputs`] picks from with its first byte:
/// default and explicit ports, userinfo, IPv6, a path prefix, WebSocket schemes.
const FUZZ_BASES: &[&str] = &[
    "https://mycompany.com",
    "https://mycompany.com:443",
    "HTTP://[::1]:80/Base",
    "wss://example.com:8443",
    "http://example.com",
];

/// Signature checks on hostile pieces. The first byte picks a public base
/// URL; the rest, split at NUL bytes, is: request target, signature header,
/// JSON body, then form parameters as name, value, name, value….
///
/// Validation must never panic, and whatever a validator signs it must accept
/// — for the fixed bases and for the header piece tried as a base URL.
pub fn signature_inputs(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else { return };
    let mut pieces = rest.split(|&b| b == 0);
    let target = String::from_utf8_lossy(pieces.next().unwrap_or_default());
    let header = pieces.next().map(String::from_utf8_lossy);
    let body = pieces.next().unwrap_or_default();
    let texts: Vec<String> = pieces.map(|p| String::from_utf8_lossy(p).into_owned()).collect();
    let params: Vec<(&str, &str)> = texts
        .chunks(2)
        .map(|pair| (pair.first().map_or("", String::as_str), pair.get(1).map_or("", String::as_str)))
        .collect();

    let base = FUZZ_BASES[usize::from(selector) % FUZZ_BASES.len()];
    let fixed = SignatureValidator::new(FUZZ_TOKEN, base).expect("the fixed bases are valid");
    let from_header = header.as_deref().and_then(|h| SignatureValidator::new(FUZZ_TOKEN, h).ok());
    for validator in [Some(fixed), from_header].into_iter().flatten() {
        let header = header.as_deref();
        let _ = validator.validate_form(&target, &params, header);
        let _ = validator.validate_get(&target, header);
        let _ = validator.validate_websocket(&target, header);
        let _ = validator.validate_json(&target, body, header).map_err(|e| e.to_string());

        let url = validator.request_url(&target);
        match validator.sign_form(&target, &params) {
            Ok(sig) => {
                let url = url.as_deref().expect("sign_form succeeded, so the URL is valid");
                assert_eq!(compute_signature(FUZZ_TOKEN, url, &params).as_deref(), Ok(sig.as_str()));
                assert_eq!(validator.validate_form(&target, &params, Some(&sig)), Ok(()));
            }
            Err(_) => assert!(url.is_err(), "sign_form failed on a valid URL"),
        }
        if let Ok(sig) = validator.sign_get(&target) {
            assert_eq!(validator.validate_get(&target, Some(&sig)), Ok(()));
        }
        if let Ok(sig) = validator.sign_websocket(&target) {
            assert_eq!(validator.validate_websocket(&target, Some(&sig)), Ok(()));
        }
        if let Ok(signed) = validator.sign_json(&target, body) {
            assert_eq!(validator.validate_json(&signed.target, body, Some(&signed.signature)), Ok(()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn form_body_holds_on_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            form_body(&data);
        }

        #[test]
        fn form_body_holds_on_form_like_text(data in "[a-zA-Z&=%+0-9]{0,200}") {
            form_body(data.as_bytes());
        }

        #[test]
        fn signature_inputs_hold_on_structured_pieces(
            selector in any::<u8>(),
            target in "/?[a-z/?=&:@\\[\\]%.]{0,30}",
            header in "[a-zA-Z0-9+/=:@\\[\\]./]{0,40}",
            body in proptest::collection::vec(any::<u8>(), 0..20),
            params in proptest::collection::vec("[^\\x00]{0,10}", 0..6),
        ) {
            let mut data = vec![selector];
            data.extend_from_slice(target.as_bytes());
            data.push(0);
            data.extend_from_slice(header.as_bytes());
            data.push(0);
            data.extend(body.iter().map(|&b| b.max(1)));
            for p in &params {
                data.push(0);
                data.extend_from_slice(p.as_bytes());
            }
            signature_inputs(&data);
        }
    }
}
