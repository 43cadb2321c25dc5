//! The TOML file, walked with the key table: toml's spanned document tree
//! (`DeTable`) gives every value its line and its text as written, and
//! [`KEYS`](super::keys::KEYS) says which keys exist and of which type, so no
//! key is declared a second time as a serde field.

use std::borrow::Cow;
use std::ops::Range;
use std::path::Path;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::keys::{ARRAY_SECTIONS, Kind, Setting, children_of, is_section};
use super::routes::{ROUTE_KEYS, RawRoute};
use super::{ConfigError, Entry, MAX_SHOWN, Origin, Raw};

/// Keys people are likely to try to put secrets under, and where the secret
/// belongs instead.
const SECRET_KEYS: [(&str, &str); 5] = [
    ("twilio.auth_token", super::ENV_AUTH_TOKEN),
    ("server.admin_token", super::ENV_ADMIN_TOKEN),
    ("admin_token", super::ENV_ADMIN_TOKEN),
    ("auth_token", super::ENV_AUTH_TOKEN),
    ("sip.password", super::ENV_SIP_PASSWORD),
];

/// Most `[[routes]]` a file may hold: every call walks them in order.
pub(super) const MAX_ROUTES: usize = 1000;

/// The file text and name, for turning spans into lines and quoted values.
pub(super) struct FileSource<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
}

impl FileSource<'_> {
    pub(super) fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = self.text.get(..offset).unwrap_or(self.text);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }

    pub(super) fn origin(&self, span: &Range<usize>) -> Origin {
        Origin::File { path: self.path.to_path_buf(), line: self.line_col(span.start).0 }
    }

    pub(super) fn shown(&self, span: &Range<usize>) -> String {
        let text = self.text.get(span.clone()).unwrap_or("");
        if text.chars().count() > MAX_SHOWN {
            let cut: String = text.chars().take(MAX_SHOWN).collect();
            format!("{cut}…")
        } else {
            text.to_owned()
        }
    }

    fn line(&self, span: &Range<usize>) -> usize {
        self.line_col(span.start).0
    }

    fn entry(&self, raw: Raw, span: &Range<usize>) -> Entry {
        Entry { raw, shown: self.shown(span), origin: self.origin(span) }
    }

    fn invalid(&self, key: String, span: &Range<usize>, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key,
            value: self.shown(span),
            origin: Box::new(self.origin(span)),
            problem: problem.into(),
        }
    }

    fn unknown(&self, key: String, span: &Range<usize>, known: String) -> ConfigError {
        ConfigError::UnknownKey { path: self.path.to_path_buf(), line: self.line(span), key, known }
    }
}

/// What the file holds: scalar keys and the raw routes.
pub(super) struct Parsed {
    pub(super) entries: Vec<(Setting, Entry)>,
    pub(super) routes: Vec<RawRoute>,
}

/// Parses the file and checks every key's name and TOML type.
pub(super) fn parse(file: &FileSource<'_>) -> Result<Parsed, ConfigError> {
    let root = DeTable::parse(file.text).map_err(|e| {
        let (line, column) = e.span().map_or((1, 1), |s| file.line_col(s.start));
        ConfigError::Syntax {
            path: file.path.to_path_buf(),
            line,
            column,
            message: e.message().trim_end().to_owned(),
        }
    })?;
    let mut parsed = Parsed { entries: Vec::new(), routes: Vec::new() };
    walk(file, root.get_ref(), "", &mut parsed)?;
    Ok(parsed)
}

type Key<'i> = Spanned<Cow<'i, str>>;
type Value<'i> = Spanned<DeValue<'i>>;

fn walk(
    file: &FileSource<'_>,
    table: &DeTable<'_>,
    prefix: &str,
    out: &mut Parsed,
) -> Result<(), ConfigError> {
    for (key, value) in table {
        let path =
            if prefix.is_empty() { key.get_ref().to_string() } else { format!("{prefix}.{}", key.get_ref()) };
        if prefix.is_empty() && ARRAY_SECTIONS.contains(&path.as_str()) {
            out.routes = routes(file, value)?;
        } else if let Some(setting) = Setting::from_path(&path) {
            out.entries.push((setting, scalar(file, setting, &path, value)?));
        } else if let Some((_, variable)) = SECRET_KEYS.iter().find(|(k, _)| *k == path) {
            return Err(ConfigError::SecretInFile {
                path: file.path.to_path_buf(),
                line: file.line(&key.span()),
                key: path,
                variable,
            });
        } else if is_section(&path) {
            match value.get_ref() {
                DeValue::Table(inner) => walk(file, inner, &path, out)?,
                _ => {
                    let problem = format!(
                        "expected a table of settings ([{path}]) with the keys {}",
                        children_of(&path)
                    );
                    return Err(file.invalid(path, &value.span(), problem));
                }
            }
        } else {
            return Err(file.unknown(path, &key.span(), children_of(prefix)));
        }
    }
    Ok(())
}

/// A scalar value of the TOML type its key has.
fn scalar(
    file: &FileSource<'_>,
    setting: Setting,
    path: &str,
    value: &Value<'_>,
) -> Result<Entry, ConfigError> {
    let info = setting.info();
    let span = value.span();
    let raw = match (info.kind, value.get_ref()) {
        (Kind::Text | Kind::Duration, DeValue::String(text)) => Some(Raw::Str(text.to_string())),
        (Kind::Bool, DeValue::Boolean(b)) => Some(Raw::Bool(*b)),
        (Kind::Int, DeValue::Integer(int)) => {
            i64::from_str_radix(int.as_str(), int.radix()).ok().map(Raw::Int)
        }
        _ => None,
    };
    match raw {
        Some(raw) => Ok(file.entry(raw, &span)),
        None => Err(file.invalid(path.to_owned(), &span, info.expected)),
    }
}

/// `[[routes]]`: an array of tables, each key of [`ROUTE_KEYS`].
fn routes(file: &FileSource<'_>, value: &Value<'_>) -> Result<Vec<RawRoute>, ConfigError> {
    let DeValue::Array(array) = value.get_ref() else {
        return Err(file.invalid(
            "routes".to_owned(),
            &value.span(),
            "expected routes as an array of tables, each starting with a [[routes]] line",
        ));
    };
    if array.len() > MAX_ROUTES {
        return Err(file.invalid(
            "routes".to_owned(),
            &value.span(),
            format!("{} routes; at most {MAX_ROUTES} are accepted", array.len()),
        ));
    }
    array.iter().enumerate().map(|(index, item)| route(file, index, item)).collect()
}

fn route(file: &FileSource<'_>, index: usize, item: &Value<'_>) -> Result<RawRoute, ConfigError> {
    let name = |key: &str| format!("routes[{index}].{key}");
    let DeValue::Table(table) = item.get_ref() else {
        return Err(file.invalid(
            format!("routes[{index}]"),
            &item.span(),
            "expected a table of route settings",
        ));
    };
    let mut raw = RawRoute {
        index,
        origin: file.origin(&item.span()),
        entries: Vec::new(),
        parameters: None,
        recording: None,
        twilio_recording: None,

        capture: None,
    };
    for (key, value) in table {
        let key_text: &str = key.get_ref();
        if key_text == "parameters" {
            raw.parameters = Some(parameters(file, &name("parameters"), value)?);
            continue;
        }
        if key_text == "recording" {
            (raw.recording, raw.twilio_recording) = route_recording(file, &name("recording"), value)?;
            continue;
        }
        if key_text == "capture" {
            raw.capture = Some(route_capture(file, &name("capture"), value)?);
            continue;
        }
        let Some(spec) = ROUTE_KEYS.iter().find(|spec| spec.name == key_text) else {
            let known: Vec<&str> =
                ROUTE_KEYS.iter().map(|s| s.name).chain(["parameters", "recording", "capture"]).collect();
            return Err(file.unknown(name(key_text), &key.span(), known.join(", ")));
        };
        let DeValue::String(text) = value.get_ref() else {
            return Err(file.invalid(name(key_text), &value.span(), spec.expected));
        };
        raw.entries.push((spec.name, file.entry(Raw::Str(text.to_string()), &value.span())));
    }
    Ok(raw)
}

/// `recording.enabled = true|false` and `recording.twilio = true|false`
/// (also written `recording = { enabled = …, twilio = … }`), at least one.
fn route_recording(
    file: &FileSource<'_>,
    key: &str,
    value: &Value<'_>,
) -> Result<(Option<bool>, Option<bool>), ConfigError> {
    const EXPECTED: &str = "expected recording.enabled and/or recording.twilio = true or false";
    let DeValue::Table(table) = value.get_ref() else {
        return Err(file.invalid(key.to_owned(), &value.span(), EXPECTED));
    };
    let (mut enabled, mut twilio) = (None, None);
    for (name, value) in table {
        let name: &Key<'_> = name;
        let slot = match name.get_ref().as_ref() {
            "enabled" => &mut enabled,
            "twilio" => &mut twilio,
            other => {
                return Err(file.unknown(
                    format!("{key}.{other}"),
                    &name.span(),
                    "enabled, twilio".to_owned(),
                ));
            }
        };
        let DeValue::Boolean(b) = value.get_ref() else {
            let expected = format!("expected {key}.{} = true or false", name.get_ref());
            return Err(file.invalid(format!("{key}.{}", name.get_ref()), &value.span(), &expected));
        };
        *slot = Some(*b);
    }
    if enabled.is_none() && twilio.is_none() {
        return Err(file.invalid(key.to_owned(), &value.span(), EXPECTED));
    }
    Ok((enabled, twilio))
}

/// `capture.enabled = true|false` (also written `capture = { enabled = … }`).
fn route_capture(file: &FileSource<'_>, key: &str, value: &Value<'_>) -> Result<bool, ConfigError> {
    const EXPECTED: &str = "expected capture.enabled = true or false";
    let DeValue::Table(table) = value.get_ref() else {
        return Err(file.invalid(key.to_owned(), &value.span(), EXPECTED));
    };
    let mut enabled = None;
    for (name, value) in table {
        let name: &Key<'_> = name;
        if name.get_ref() != "enabled" {
            return Err(file.unknown(
                format!("{key}.{}", name.get_ref()),
                &name.span(),
                "enabled".to_owned(),
            ));
        }
        let DeValue::Boolean(b) = value.get_ref() else {
            return Err(file.invalid(format!("{key}.enabled"), &value.span(), EXPECTED));
        };
        enabled = Some(*b);
    }
    enabled.ok_or_else(|| file.invalid(key.to_owned(), &value.span(), EXPECTED))
}

/// `parameters = { name = "value", … }`: each value a string.
fn parameters(
    file: &FileSource<'_>,
    key: &str,
    value: &Value<'_>,
) -> Result<Vec<(String, String, Entry)>, ConfigError> {
    const EXPECTED: &str =
        "expected a table of parameter names and string values, such as { tenant_id = \"clinic_123\" }";
    let DeValue::Table(table) = value.get_ref() else {
        return Err(file.invalid(key.to_owned(), &value.span(), EXPECTED));
    };
    let mut out = Vec::new();
    for (name, value) in table {
        let name: &Key<'_> = name;
        let DeValue::String(text) = value.get_ref() else {
            return Err(file.invalid(format!("{key}.{}", name.get_ref()), &value.span(), EXPECTED));
        };
        let entry = file.entry(Raw::Str(text.to_string()), &value.span());
        out.push((name.get_ref().to_string(), text.to_string(), entry));
    }
    Ok(out)
}
