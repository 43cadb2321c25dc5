//! `[[routes]]`: per-number behaviour, read from the file only (an
//! environment variable cannot express a list of tables). Each route is
//! checked key by key and as a whole, and every error names
//! `routes[N].key`, the value and its line. The decisions a route drives
//! live in `voxproxy_adapters::route`.

use voxproxy_adapters::route::{Backend, OnMissed, Route, RouteTo, Spoken, StreamMode, check_e164};
use voxproxy_adapters::twiml::StreamTrack;

use super::{ConfigError, Entry, Origin, Raw, parse_duration};

/// A route key's name and what a value of the wrong TOML type is told.
pub(super) struct RouteKey {
    pub(super) name: &'static str,
    pub(super) expected: &'static str,
}

const fn key(name: &'static str, expected: &'static str) -> RouteKey {
    RouteKey { name, expected }
}

/// Every route key but `parameters` (a table, read on its own); all strings.
pub(super) const ROUTE_KEYS: [RouteKey; 12] = [
    key("to", "expected \"*\" (any number) or the called number in E.164 form, such as \"+14155550199\""),
    key(
        "backend",
        "expected a backend address such as \"10.0.0.7:4000\", \"sip:agent@10.0.0.7\" or \"wss://bot.example.com\"",
    ),
    key("greeting", "expected the text said before anything else"),
    key("voice", "expected a Twilio <Say> voice such as \"Polly.Joanna\""),
    key("language", "expected a language tag such as \"en-US\""),
    key("mode", "expected \"connect\" or \"fork\""),
    key("track", "expected \"inbound_track\", \"outbound_track\" or \"both_tracks\""),
    key("forward_to", "expected the number to dial first, in E.164 form such as \"+14155550111\""),
    key("forward_timeout", "expected a duration from 5s to 10m in whole seconds, such as \"20s\""),
    key("on_missed", "expected \"stream\", \"sms\" or \"hangup\""),
    key("sms_text", "expected the text of the SMS sent to the caller"),
    key("fallback", "expected the text said when the backend cannot take the call"),
];

/// Longest `<Say>` or SMS text, in characters.
const MAX_TEXT_CHARS: usize = voxproxy_adapters::route::MAX_TEXT_CHARS;
/// Most `parameters` per route, and their longest name and value.
const MAX_PARAMETERS: usize = 32;
const MAX_PARAMETER_NAME: usize = 64;
const MAX_PARAMETER_VALUE: usize = 256;
/// Twilio's `<Dial timeout>` range, in seconds.
const FORWARD_TIMEOUT_SECS: std::ops::RangeInclusive<u64> = 5..=600;

/// One `[[routes]]` table as the file holds it.
pub(super) struct RawRoute {
    pub(super) index: usize,
    /// Where the table starts, for a route missing a required key.
    pub(super) origin: Origin,
    pub(super) entries: Vec<(&'static str, Entry)>,
    /// `(name, value, entry)` of `parameters`.
    pub(super) parameters: Option<Vec<(String, String, Entry)>>,
    /// `recording.enabled`, when the route sets it.
    pub(super) recording: Option<bool>,
    /// `recording.twilio`, when the route sets it.
    pub(super) twilio_recording: Option<bool>,

    /// `capture.enabled`, when the route sets it.
    pub(super) capture: Option<bool>,
}

impl RawRoute {
    fn name(&self, key: &str) -> String {
        format!("routes[{}].{key}", self.index)
    }

    fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|(name, _)| *name == key).map(|(_, entry)| entry)
    }

    fn text(&self, key: &str) -> Option<&str> {
        match self.entry(key).map(|e| &e.raw) {
            Some(Raw::Str(text)) => Some(text),
            _ => None,
        }
    }

    fn invalid(&self, key: &str, problem: impl Into<String>) -> ConfigError {
        let (value, origin) = match self.entry(key) {
            Some(entry) => (entry.shown.clone(), entry.origin.clone()),
            None => ("(not set)".to_owned(), self.origin.clone()),
        };
        ConfigError::Invalid { key: self.name(key), value, origin: Box::new(origin), problem: problem.into() }
    }

    /// The value of `key` turned into a `T` by `parse`, whose error is the problem.
    fn parsed<T>(
        &self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.text(key) {
            None => Ok(None),
            Some(text) => parse(text).map(Some).map_err(|problem| self.invalid(key, problem)),
        }
    }
}

/// The routes, checked, in file order. `default_backend` is `rtp.backend`,
/// the backend of a route that names none.
pub(super) fn resolve(raw: &[RawRoute], default_backend: &Backend) -> Result<Vec<Route>, ConfigError> {
    let mut routes: Vec<Route> = Vec::with_capacity(raw.len());
    for r in raw {
        let route = resolve_one(r, default_backend)?;
        if let Some(earlier) = routes.iter().position(|e| e.to == RouteTo::Any || e.to == route.to) {
            return Err(r.invalid(
                "to",
                format!(
                    "routes[{earlier}] already takes every call this route would, so it could never match"
                ),
            ));
        }
        routes.push(route);
    }
    Ok(routes)
}

fn resolve_one(r: &RawRoute, default_backend: &Backend) -> Result<Route, ConfigError> {
    let to = r
        .parsed("to", |s| RouteTo::parse(s).map_err(str::to_owned))?
        .ok_or_else(|| r.invalid("to", "every route needs `to`: the called number it takes, or \"*\""))?;
    let backend = r
        .parsed("backend", |s| Backend::parse(s).map_err(|e| e.to_string()))?
        .unwrap_or_else(|| default_backend.clone());
    let mut route = Route::new(to, backend);
    let text = |key| r.parsed(key, check_text);
    let voice = text("voice")?;
    let language = text("language")?;
    route.greeting =
        text("greeting")?.map(|text| Spoken { text, voice: voice.clone(), language: language.clone() });
    route.fallback = text("fallback")?;
    route.sms_text = text("sms_text")?;
    if (voice.is_some() || language.is_some()) && route.greeting.is_none() && route.fallback.is_none() {
        let key = if voice.is_some() { "voice" } else { "language" };
        return Err(r.invalid(key, "voice and language apply to greeting and fallback; set one of them too"));
    }
    route.parameters = parameters(r)?;
    route.recording = r.recording;
    route.twilio_recording = r.twilio_recording;

    route.capture = r.capture;
    route.mode = r
        .parsed("mode", |s| match s {
            "connect" => Ok(StreamMode::Connect),
            "fork" => Ok(StreamMode::Fork),
            _ => Err(ROUTE_KEYS[5].expected.to_owned()),
        })?
        .unwrap_or_default();
    route.track =
        r.parsed("track", |s| StreamTrack::from_keyword(s).ok_or_else(|| ROUTE_KEYS[6].expected.to_owned()))?;
    route.forward_to =
        r.parsed("forward_to", |s| check_e164(s).map(|()| s.to_owned()).map_err(str::to_owned))?;
    if let Some(secs) = r.parsed("forward_timeout", forward_timeout)? {
        route.forward_timeout_secs = secs;
    }
    route.on_missed = r
        .parsed("on_missed", |s| match s {
            "stream" => Ok(OnMissed::Stream),
            "sms" => Ok(OnMissed::Sms),
            "hangup" => Ok(OnMissed::Hangup),
            _ => Err(ROUTE_KEYS[9].expected.to_owned()),
        })?
        .unwrap_or_default();
    check_together(r, &route)?;
    Ok(route)
}

/// The rules between keys of one route.
fn check_together(r: &RawRoute, route: &Route) -> Result<(), ConfigError> {
    if route.track.is_some() && route.mode != StreamMode::Fork {
        return Err(r.invalid(
            "track",
            "track applies to mode = \"fork\" only: a <Connect><Stream> carries the caller's audio both ways",
        ));
    }
    if route.mode == StreamMode::Fork && route.forward_to.is_none() {
        return Err(r.invalid(
            "mode",
            "a fork listens while the call goes on with a forward, so fork mode needs forward_to",
        ));
    }
    if r.entry("forward_timeout").is_some() && route.forward_to.is_none() {
        return Err(r.invalid("forward_timeout", "forward_timeout applies to forward_to, which is not set"));
    }
    if route.on_missed == OnMissed::Sms && route.sms_text.is_none() {
        return Err(r.invalid("on_missed", "on_missed = \"sms\" needs sms_text, the message to send"));
    }
    if route.sms_text.is_some() && route.on_missed != OnMissed::Sms {
        return Err(r.invalid("sms_text", "sms_text is only sent with on_missed = \"sms\""));
    }
    Ok(())
}

fn check_text(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("expected some text, not an empty string".to_owned());
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(format!("longer than {MAX_TEXT_CHARS} characters"));
    }
    if text.chars().any(char::is_control) {
        return Err("must not contain line breaks or control characters".to_owned());
    }
    Ok(text.to_owned())
}

fn forward_timeout(text: &str) -> Result<u32, String> {
    let expected = ROUTE_KEYS[8].expected;
    let d = parse_duration(text).map_err(|e| format!("{e}; {expected}"))?;
    let whole = d.subsec_nanos() == 0 && FORWARD_TIMEOUT_SECS.contains(&d.as_secs());
    if !whole {
        return Err(expected.to_owned());
    }
    u32::try_from(d.as_secs()).map_err(|_| expected.to_owned())
}

fn parameters(r: &RawRoute) -> Result<Vec<(String, String)>, ConfigError> {
    let Some(raw) = &r.parameters else { return Ok(Vec::new()) };
    if raw.len() > MAX_PARAMETERS {
        return Err(r.invalid("parameters", format!("at most {MAX_PARAMETERS} parameters")));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (name, value, entry) in raw {
        let invalid = |problem: &str| ConfigError::Invalid {
            key: format!("{}.{name}", r.name("parameters")),
            value: entry.shown.clone(),
            origin: Box::new(entry.origin.clone()),
            problem: problem.to_owned(),
        };
        let valid_name = !name.is_empty()
            && name.len() <= MAX_PARAMETER_NAME
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid_name {
            return Err(invalid("a parameter name is 1 to 64 letters, digits, _ and -"));
        }
        if ["CallSid", "From", "To"].contains(&name.as_str()) {
            return Err(invalid("CallSid, From and To are always sent; choose another name"));
        }
        if value.chars().count() > MAX_PARAMETER_VALUE || value.chars().any(char::is_control) {
            return Err(invalid("a parameter value is at most 256 characters, without control characters"));
        }
        out.push((name.clone(), value.clone()));
    }
    Ok(out)
}
