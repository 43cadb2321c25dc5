//! What a SIGHUP may change: [`Config::keep_restart_only`] puts back the
//! keys that only take effect at start and names the ones the new file
//! changed, so the operator learns they wait for a restart.

use super::Config;

/// The keys a reload never changes, with why: each one is bound into
/// something made once at start.
///
/// - `server.listen`, `server.workers`, `server.io`,
///   `server.admin_listen`: the listening sockets and the worker threads on
///   their backend.
/// - `server.public_url`, `twilio.validate_signatures`, the Twilio auth
///   token: the signature validator and the stream-token key; a stream
///   token issued by a webhook just before the reload must still verify
///   when its WebSocket arrives just after.
/// - `rtp.bind`, `rtp.ports`: the RTP port pool, whose ports running calls
///   hold.
/// - `cdr.path`: the call-record writer and its journal (SIGHUP reopens the
///   file at the same path, for log rotation).
/// - `twilio.account_sid`, `twilio.api_base`: the REST client each worker
///   makes on first use.
/// - `log.format`, `log.level`: the logger is installed once per process.
/// - `otel.*`: the trace exporter, its threads and its queue.
pub const RESTART_ONLY_KEYS: [&str; 20] = [
    "server.listen",
    "server.workers",
    "server.io",
    "server.public_url",
    "twilio.validate_signatures",
    "TWILIO_AUTH_TOKEN",
    "twilio.account_sid",
    "twilio.api_base",
    "rtp.bind",
    "rtp.ports",
    "cdr.path",
    "log.format",
    "log.level",
    "server.admin_listen",
    "otel.endpoint",
    "otel.service_name",
    "otel.sample_percent",
    "otel.max_queue",
    "otel.export_timeout",
    "store",
];

impl Config {
    /// Copies every key of [`RESTART_ONLY_KEYS`] from `running` into
    /// `self` (a freshly loaded config) and returns the names of those whose
    /// value `self` had changed, in that list's order.
    #[must_use]
    pub fn keep_restart_only(&mut self, running: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let mut keep = |name: &'static str, differs: bool| {
            if differs {
                changed.push(name);
            }
        };
        keep("server.listen", self.server.listen != running.server.listen);
        keep("server.workers", self.server.workers != running.server.workers);
        keep("server.io", self.server.io != running.server.io);
        keep("server.public_url", self.server.public_url != running.server.public_url);
        keep(
            "twilio.validate_signatures",
            self.twilio.validate_signatures != running.twilio.validate_signatures,
        );
        // Both sides come from the operator, not the network, so a plain
        // comparison leaks nothing.
        keep(
            "TWILIO_AUTH_TOKEN",
            self.secrets.twilio_auth_token.as_ref().map(super::Secret::expose)
                != running.secrets.twilio_auth_token.as_ref().map(super::Secret::expose),
        );
        keep("twilio.account_sid", self.twilio.account_sid != running.twilio.account_sid);
        keep("twilio.api_base", self.twilio.api_base != running.twilio.api_base);
        keep("rtp.bind", self.rtp.bind != running.rtp.bind);
        keep("rtp.ports", self.rtp.ports != running.rtp.ports);
        keep("cdr.path", self.cdr.path != running.cdr.path);
        keep("log.format", self.log.format != running.log.format);
        keep("log.level", self.log.level != running.log.level);
        keep("server.admin_listen", self.server.admin_listen != running.server.admin_listen);
        keep("store", self.store != running.store);
        self.server.listen = running.server.listen;
        self.server.workers = running.server.workers;
        self.server.io = running.server.io;
        self.server.public_url.clone_from(&running.server.public_url);
        self.twilio.validate_signatures = running.twilio.validate_signatures;
        self.secrets.twilio_auth_token.clone_from(&running.secrets.twilio_auth_token);
        self.twilio.account_sid.clone_from(&running.twilio.account_sid);
        self.twilio.api_base.clone_from(&running.twilio.api_base);
        self.rtp.bind = running.rtp.bind;
        self.rtp.ports = running.rtp.ports;
        self.cdr.path.clone_from(&running.cdr.path);
        self.log.format = running.log.format;
        self.log.level.clone_from(&running.log.level);
        self.server.admin_listen = running.server.admin_listen;
        let (new, old) = (&self.otel, &running.otel);
        keep("otel.endpoint", new.endpoint != old.endpoint);
        keep("otel.service_name", new.service_name != old.service_name);
        keep("otel.sample_percent", new.sample_percent != old.sample_percent);
        keep("otel.max_queue", new.max_queue != old.max_queue);
        keep("otel.export_timeout", new.export_timeout != old.export_timeout);
        self.otel.clone_from(&running.otel);
        self.store.clone_from(&running.store);
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServeArgs;

    fn load(toml: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("voxproxy.toml");
        std::fs::write(&path, toml).unwrap();
        let args = ServeArgs { config: Some(path), ..ServeArgs::default() };
        Config::load(&args, [("TWILIO_AUTH_TOKEN", "token")]).unwrap()
    }

    const BASE: &str = "[server]\npublic_url = \"https://a.example\"\nlisten = \"127.0.0.1:8080\"\n\
                        [limits]\nmax_calls = 10\n";

    #[test]
    fn restart_only_keys_keep_the_running_value_and_are_named() {
        let running = load(BASE);
        let mut next = load(
            "[server]\npublic_url = \"https://b.example\"\nlisten = \"127.0.0.1:9090\"\n\
             [limits]\nmax_calls = 20\n[rtp]\nports = \"30000-30099\"\n",
        );
        let changed = next.keep_restart_only(&running);
        assert_eq!(changed, ["server.listen", "server.public_url", "rtp.ports"]);
        assert_eq!(next.server.listen, running.server.listen);
        assert_eq!(next.server.public_url, running.server.public_url);
        assert_eq!(next.rtp.ports, running.rtp.ports);
        // A key that can change does.
        assert_eq!(next.limits.max_calls, 20);
    }

    #[test]
    fn an_unchanged_file_names_nothing() {
        let running = load(BASE);
        let mut next = load(BASE);
        assert!(next.keep_restart_only(&running).is_empty());
    }
}
