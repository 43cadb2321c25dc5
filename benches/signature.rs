//! X-Twilio-Signature cost per webhook: what the proxy spends before it can
//! trust a voice webhook.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use voxproxy_adapters::form::Form;
use voxproxy_adapters::signature::SignatureValidator;

/// A voice webhook body shaped like Twilio's (field set and order), with
/// made-up SIDs and numbers.
const VOICE_BODY: &[u8] = b"Called=%2B14155550100&ToState=CA&CallerCountry=US&Direction=inbound\
    &CallerState=CA&ToZip=94105&CallSid=CA5b7f1b2b6a0c4e0f9d0a1c2e3f4a5b6c&To=%2B14155550100\
    &CallerZip=94016&ToCountry=US&StirVerstat=TN-Validation-Passed-A&CalledZip=94105\
    &ApiVersion=2010-04-01&CalledCity=SAN+FRANCISCO&CallStatus=ringing&From=%2B14155550199\
    &AccountSid=AC0123456789abcdef0123456789abcdef&CalledCountry=US&CallerCity=SAN+MATEO\
    &ToCity=SAN+FRANCISCO&FromCountry=US&Caller=%2B14155550199&FromCity=SAN+MATEO\
    &CalledState=CA&FromZip=94016&FromState=CA";

fn voice_webhook(c: &mut Criterion) {
    let validator =
        SignatureValidator::new("0123456789abcdef0123456789abcdef", "https://voice.example.com").unwrap();
    let form = Form::parse(VOICE_BODY).unwrap();
    let target = "/twilio/voice";
    let signature = validator.sign_form(target, form.pairs()).unwrap();

    c.bench_function("signature/validate_voice_webhook_form", |b| {
        b.iter(|| {
            validator.validate_form(black_box(target), black_box(form.pairs()), Some(black_box(&signature)))
        })
    });
    c.bench_function("signature/parse_and_validate_voice_webhook", |b| {
        b.iter(|| {
            let form = Form::parse(black_box(VOICE_BODY)).unwrap();
            validator.validate_form(target, form.pairs(), Some(&signature))
        })
    });
}

criterion_group!(benches, voice_webhook);
criterion_main!(benches);
