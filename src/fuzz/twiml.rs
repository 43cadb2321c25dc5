//! TwiML documents.

/// TwiML parser: any bytes (read as UTF-8, invalid sequences replaced) either
/// fail to parse with an error, or parse into a `Response` that writes, reads
/// back equal, and writes the same bytes again.
pub fn twiml_parse(data: &[u8]) {
    use voxproxy_adapters::twiml::{ParseLimits, Response};

    let text = String::from_utf8_lossy(data);
    let Ok(parsed) = Response::from_xml(&text) else { return };
    let written = parsed.to_xml().expect("a parsed document must write");
    // Escaping may make the written document longer than the input, so
    // only the size bound is lifted when reading it back.
    let unbounded = ParseLimits { max_bytes: usize::MAX, ..ParseLimits::default() };
    let reread = Response::from_xml_with_limits(&written, &unbounded).expect("a written document must parse");
    assert_eq!(reread, parsed, "write then parse changed the document: {written}");
    assert_eq!(reread.to_xml().as_deref(), Ok(written.as_str()), "writing is not deterministic");
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use voxproxy_adapters::twiml::Response;

    #[test]
    fn twiml_seeds_replay_and_only_the_broken_ones_are_refused() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/twiml_parse");
        let mut seeds = 0;
        for entry in fs::read_dir(&dir).expect("seed corpus") {
            let path = entry.expect("readable entry").path();
            let name = path.file_name().expect("file name").to_string_lossy().into_owned();
            let data = fs::read(&path).expect("readable seed");
            super::twiml_parse(&data);
            let parsed = Response::from_xml(core::str::from_utf8(&data).expect("seeds are UTF-8"));
            assert_eq!(parsed.is_err(), name.starts_with("broken_"), "{name}: {parsed:?}");
            seeds += 1;
        }
        assert!(seeds >= 4, "only {seeds} seeds");
    }
}
