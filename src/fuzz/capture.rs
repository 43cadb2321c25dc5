//! Fuzz entry point `capture_reader`: arbitrary bytes as a capture file
//! (docs/capture.md), read record by record and replayed on a fresh
//! bridge. Neither may panic, allocate without bound or spin; every record
//! the reader yields must account for at least its 5 bytes of head.

use voxproxy_adapters::capture::{Reader, replay};

/// Reads and replays arbitrary bytes as a capture.
pub fn capture_reader(data: &[u8]) {
    if let Ok((reader, _header)) = Reader::new(data) {
        let mut records = 0usize;
        let mut failed = false;
        for record in reader {
            assert!(!failed, "the reader yielded a record after an error");
            failed = record.is_err();
            records += 1;
        }
        assert!(records <= data.len() / 5, "{records} records from {} bytes", data.len());
        if let Ok(report) = replay(data) {
            let fed = report.inputs + report.outputs;
            assert!(fed <= records as u64, "the replay used {fed} records of {records}");
        }
    } else {
        assert!(replay(data).is_err(), "the replay accepted what the reader refused");
    }
}
