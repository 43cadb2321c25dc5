//! TwiML: building and writing the voice-webhook answer, and parsing it back
//! (what the simulator does with every webhook answer).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use voxproxy_adapters::twiml::{Response, Stream};

/// The answer to `POST /twilio/voice`: a bidirectional stream to the proxy
/// carrying the call's metadata as parameters.
fn voice_answer(call_sid: &str, from: &str, to: &str, account_sid: &str) -> Response {
    Response::new().connect_stream(
        Stream::new("wss://proxy.example.com/twilio/media")
            .expect("a valid stream url")
            .parameter("CallSid", call_sid)
            .parameter("From", from)
            .parameter("To", to)
            .parameter("AccountSid", account_sid),
    )
}

const CALL_SID: &str = "CA0123456789abcdef0123456789abcdef";
const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";

fn twiml(c: &mut Criterion) {
    let xml = voice_answer(CALL_SID, "+15550001111", "+15550002222", ACCOUNT_SID).to_xml().expect("writes");
    let mut group = c.benchmark_group("twiml");
    group.throughput(Throughput::Bytes(xml.len() as u64));

    let mut out = String::with_capacity(1024);
    group.bench_function("build_and_write_voice_answer", |b| {
        b.iter(|| {
            out.clear();
            let answer = voice_answer(
                black_box(CALL_SID),
                black_box("+15550001111"),
                black_box("+15550002222"),
                ACCOUNT_SID,
            );
            answer.write_xml(&mut out).expect("writes");
            black_box(out.len())
        });
    });

    group.bench_function("parse_voice_answer", |b| {
        b.iter(|| Response::from_xml(black_box(&xml)).expect("parses"));
    });
    group.finish();
}

criterion_group!(benches, twiml);
criterion_main!(benches);
