//! Fuzz entry points: sdp.

use voxproxy_adapters::sdp::SessionDescription;

/// Parses arbitrary bytes as an SDP answer. Whatever parses must build, and
/// the built text must parse back to the same description.
pub fn sdp_parse(data: &[u8]) {
    let Ok(parsed) = SessionDescription::parse(data) else { return };
    let built = match parsed.build() {
        Ok(built) => built,
        Err(error) => panic!("parsed description does not build: {error}\n{parsed:?}"),
    };
    match SessionDescription::parse(built.as_bytes()) {
        Ok(again) => assert_eq!(again, parsed, "build → parse changed the description:\n{built}"),
        Err(error) => panic!("built description does not parse: {error}\n{built}"),
    }
}
