use super::*;
use crate::form::Form;
use crate::url::Scheme;
use proptest::prelude::*;

fn call(to: &str) -> VoiceWebhook {
    let body = format!(
        "CallSid=CA0123456789abcdef0123456789abcdef&AccountSid=AC0123456789abcdef0123456789abcdef\
         &From=%2B14155550100&To={}&CallStatus=ringing&Direction=inbound",
        to.replace('+', "%2B")
    );
    VoiceWebhook::from_form(Form::parse(body.as_bytes()).unwrap()).unwrap()
}

fn ctx() -> AnswerContext {
    AnswerContext::new(Url::parse_base("https://voice.example.com", &[Scheme::Https]).unwrap(), "vp").unwrap()
}

fn rtp() -> Backend {
    Backend::parse("10.0.0.7:4000").unwrap()
}

fn xml(response: &Response) -> String {
    response.to_xml().unwrap()
}

const HEAD: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>";
const STREAM_1: &str = "<Stream url=\"wss://voice.example.com/twilio/media\" \
     name=\"vp_CA0123456789abcdef0123456789abcdef_1\" \
     statusCallback=\"https://voice.example.com/twilio/stream-status\">\
     <Parameter name=\"CallSid\" value=\"CA0123456789abcdef0123456789abcdef\"/>\
     <Parameter name=\"From\" value=\"+14155550100\"/><Parameter name=\"To\" value=\"+14155550199\"/>";

#[test]
fn backends_parse_into_their_legs() {
    assert_eq!(Backend::parse("127.0.0.1:4000"), Ok(Backend::Rtp("127.0.0.1:4000".parse().unwrap())));
    assert_eq!(Backend::parse("[::1]:0").map(|b| b.leg()), Ok(LegKind::Rtp));
    let sip = Backend::parse("SIP:{to}@PBX.example.com:5070;Transport=TCP").unwrap();
    let Backend::Sip(uri) = &sip else { panic!("{sip:?}") };
    assert_eq!(
        (uri.host.as_str(), uri.port, uri.transport),
        ("pbx.example.com", Some(5070), SipTransport::Tcp)
    );
    assert_eq!(sip.to_string(), "sip:{to}@pbx.example.com:5070;transport=tcp");
    let sips = SipUri::parse("sips:frontdesk@10.0.0.7").unwrap();
    assert_eq!(
        (sips.secure, sips.transport, sips.to_string().as_str()),
        (true, SipTransport::Tls, "sips:frontdesk@10.0.0.7")
    );
    assert_eq!(SipUri::parse("sip:[2001:db8::7]").unwrap().host, "[2001:db8::7]");
    let ws = Backend::parse("WSS://Bot.example.com/agent?tenant=acme").unwrap();
    assert_eq!(
        (ws.leg(), ws.to_string().as_str()),
        (LegKind::WebSocket, "wss://bot.example.com/agent?tenant=acme")
    );
}

#[test]
fn bad_backends_are_refused_with_the_reason() {
    let cases: &[(&str, &str)] = &[
        ("backend:4000", "expected the IP address and port"),
        ("0.0.0.0:4000", "unspecified address"),
        ("http://x:1", "expected the IP address and port"),
        ("sip:", "no host"),
        ("sip:@pbx", "user part before \"@\" is empty"),
        ("sip:a b@pbx", "spaces"),
        ("sip:{too}@pbx", "{to} and {from}"),
        ("sip:a<b@pbx", "cannot carry"),
        ("sip:a%zz@pbx", "two hex digits"),
        ("sip:pbx:0", "1 to 65535"),
        ("sip:pbx:70000", "1 to 65535"),
        ("sip:pb_x", "DNS name"),
        ("sip:pbx/path", "no path"),
        ("sip:pbx?subject=x", "headers"),
        ("sip:pbx;lr", "only URI parameter"),
        ("sip:pbx;transport=sctp", "udp, tcp or tls"),
        ("sip:pbx;transport=tcp;transport=udp", "twice"),
        ("sips:pbx;transport=udp", "TLS only"),
        ("ws://", "WebSocket URL"),
        ("wss://bot.example.com/#x", "fragment"),
    ];
    for (text, needle) in cases {
        let msg = Backend::parse(text).unwrap_err().to_string();
        assert!(msg.contains(needle), "{text}: {msg}");
    }
    let long = format!("sip:{}@pbx", "a".repeat(MAX_SIP_URI_LEN));
    assert_eq!(Backend::parse(&long), Err(BackendError::SipTooLong));
}

#[test]
fn sip_placeholders_expand_escaped() {
    let uri = SipUri::parse("sip:{to}-{from}@pbx.example.com;transport=tcp").unwrap();
    assert_eq!(
        uri.request_uri("+14155550199", "+14155550100"),
        "sip:+14155550199-+14155550100@pbx.example.com;transport=tcp"
    );
    // A hostile caller ID cannot add parameters or headers to the URI.
    assert_eq!(uri.request_uri("+1", "a;b?c@d e"), "sip:+1-a%3Bb%3Fc%40d%20e@pbx.example.com;transport=tcp");
}

#[test]
fn first_matching_route_wins_and_the_default_is_last() {
    let a = Route::new(RouteTo::parse("+14155550199").unwrap(), rtp());
    let any = Route::new(RouteTo::Any, Backend::parse("sip:ai@10.0.0.8").unwrap());
    let b = Route::new(RouteTo::parse("+14155550111").unwrap(), rtp());
    let default = Route::new(RouteTo::Any, rtp());
    let routes = [a, any, b];
    assert_eq!(match_route(&routes, &default, "+14155550199").index, Some(0));
    assert_eq!(match_route(&routes, &default, "+14155550111").index, Some(1), "* comes before it");
    assert_eq!(match_route(&routes[..1], &default, "+14155550111").label(), "default");
    assert_eq!(match_route(&routes, &default, "+1").label(), "routes[1]");
    assert!(RouteTo::parse("4155550199").is_err());
    assert!(RouteTo::parse("+0123456789").is_err());
    assert!(RouteTo::parse("+1234567").is_err());
    assert!(RouteTo::parse("+1415555019912345").is_err());
}

#[test]
fn plain_route_connects_the_stream_with_name_callback_and_parameters() {
    let mut route = Route::new(RouteTo::Any, rtp());
    route.parameters = vec![("tenant_id".into(), "clinic_123".into())];
    let answer = answer_voice(&route, &call("+14155550199"), &ctx());
    assert_eq!(
        xml(&answer),
        format!(
            "{HEAD}<Connect action=\"https://voice.example.com/twilio/stream-ended\">{STREAM_1}\
             <Parameter name=\"tenant_id\" value=\"clinic_123\"/></Stream></Connect></Response>"
        )
    );
}

#[test]
fn greeting_then_forward_with_timeout_and_action() {
    let mut route = Route::new(RouteTo::Any, rtp());
    route.greeting = Some(Spoken {
        text: "Thanks for calling Acme Vets.".into(),
        voice: Some("Polly.Joanna".into()),
        language: Some("en-US".into()),
    });
    route.forward_to = Some("+14155550111".into());
    let answer = answer_voice(&route, &call("+14155550199"), &ctx());
    assert_eq!(
        xml(&answer),
        format!(
            "{HEAD}<Say voice=\"Polly.Joanna\" language=\"en-US\">Thanks for calling Acme Vets.</Say>\
             <Dial action=\"https://voice.example.com/twilio/dial-status\" timeout=\"20\">+14155550111</Dial>\
             </Response>"
        )
    );
}

#[test]
fn fork_mode_starts_a_listen_only_stream_before_the_forward() {
    let mut route = Route::new(RouteTo::Any, rtp());
    route.mode = StreamMode::Fork;
    route.track = Some(StreamTrack::BothTracks);
    route.forward_to = Some("+14155550111".into());
    route.forward_timeout_secs = 15;
    let text = xml(&answer_voice(&route, &call("+14155550199"), &ctx()));
    let expected_stream = STREAM_1.replace("statusCallback=", "track=\"both_tracks\" statusCallback=");
    assert_eq!(
        text,
        format!(
            "{HEAD}<Start>{expected_stream}</Stream></Start>\
             <Dial action=\"https://voice.example.com/twilio/dial-status\" timeout=\"15\">+14155550111</Dial>\
             </Response>"
        )
    );
}

#[test]
fn dial_status_decides_per_on_missed() {
    let mut route = Route::new(RouteTo::Any, rtp());
    route.forward_to = Some("+14155550111".into());
    route.sms_text = Some("Sorry we missed you.".into());
    let c = call("+14155550199");
    for answered in ["completed", "answered"] {
        let next = after_dial(&route, &c, answered, &ctx());
        assert_eq!(
            (xml(&next.twiml), next.sms, next.missed_action),
            (format!("{HEAD}<Hangup/></Response>"), None, None)
        );
    }
    for missed in ["no-answer", "busy", "failed", "canceled", "something-new"] {
        route.on_missed = OnMissed::Stream;
        let next = after_dial(&route, &c, missed, &ctx());
        let text = xml(&next.twiml);
        assert!(
            text.contains("<Connect action=")
                && text.contains("name=\"vp_CA0123456789abcdef0123456789abcdef_2\""),
            "{text}"
        );
        assert_eq!((next.sms, next.missed_action), (None, Some(OnMissed::Stream)));

        route.on_missed = OnMissed::Sms;
        let next = after_dial(&route, &c, missed, &ctx());
        assert_eq!(xml(&next.twiml), format!("{HEAD}<Hangup/></Response>"));
        let sms = next.sms.expect("an SMS");
        assert_eq!(
            (sms.to.as_str(), sms.from.as_str(), sms.body.as_str()),
            ("+14155550100", "+14155550199", "Sorry we missed you.")
        );

        route.on_missed = OnMissed::Hangup;
        let next = after_dial(&route, &c, missed, &ctx());
        assert_eq!(
            (xml(&next.twiml), next.sms, next.missed_action),
            (format!("{HEAD}<Hangup/></Response>"), None, Some(OnMissed::Hangup))
        );
    }
}

#[test]
fn dial_call_status_is_read_from_the_callback() {
    let body = b"CallSid=CA0123456789abcdef0123456789abcdef&AccountSid=AC0123456789abcdef0123456789abcdef&From=%2B1&To=%2B2&CallStatus=in-progress&Direction=inbound&DialCallStatus=no-answer";
    let webhook = VoiceWebhook::from_form(Form::parse(body).unwrap()).unwrap();
    assert_eq!(dial_call_status(&webhook), Some("no-answer"));
    assert_eq!(dial_call_status(&call("+1")), None);
}

#[test]
fn a_stream_that_ends_normally_ends_the_call_and_a_failed_leg_gets_the_fallback() {
    let mut route = Route::new(RouteTo::Any, rtp());
    route.fallback = Some("Sorry, nobody can take your call right now.".into());
    let c = call("+14155550199");
    let next = after_stream(&route, &c, StreamEnd::Normal);
    assert_eq!((xml(&next.twiml), next.missed_action), (format!("{HEAD}<Hangup/></Response>"), None));

    let next = after_stream(&route, &c, StreamEnd::LegFailed);
    assert_eq!(
        xml(&next.twiml),
        format!("{HEAD}<Say>Sorry, nobody can take your call right now.</Say><Hangup/></Response>")
    );
    assert_eq!(next.missed_action, Some(OnMissed::Hangup), "a failed leg cannot stream again");

    route.on_missed = OnMissed::Sms;
    route.sms_text = Some("We will call back.".into());
    route.fallback = None;
    let next = after_stream(&route, &c, StreamEnd::LegFailed);
    assert_eq!(xml(&next.twiml), format!("{HEAD}<Hangup/></Response>"));
    assert_eq!(next.sms.map(|s| s.body), Some("We will call back.".to_owned()));
}

proptest! {
    #[test]
    fn backend_parser_never_panics_and_display_reparses(text in "\\PC{0,48}") {
        if let Ok(backend) = Backend::parse(&text) {
            prop_assert_eq!(Backend::parse(&backend.to_string()), Ok(backend));
        }
    }

    #[test]
    fn expanded_request_uris_stay_valid(to in "\\PC{0,20}", from in "\\PC{0,20}") {
        let uri = SipUri::parse("sip:{to}.{from}@pbx.example.com").unwrap();
        let expanded = uri.request_uri(&to, &from);
        let reparsed = SipUri::parse(&expanded).unwrap();
        prop_assert_eq!(reparsed.host, "pbx.example.com");
    }
}

#[test]
fn a_sip_call_is_answered_with_one_stream_carrying_the_tags_and_no_action() {
    let tags = [(SIP_CALL_PARAMETER.to_owned(), "0123abcd".to_owned())];
    let twiml = xml(&answer_sip_call(&call("+14155550199"), &ctx(), &tags));
    assert_eq!(
        twiml,
        format!(
            "{HEAD}<Connect>{STREAM_1}<Parameter name=\"voxproxy_sip_call\" value=\"0123abcd\"/></Stream>\
             </Connect></Response>"
        )
    );
}
