//! The part of the server a SIGHUP can replace: the configuration and what
//! is made from it alone (TLS acceptor, rate limiters). New calls and
//! webhooks read it through one lock-free load ([`arc_swap::ArcSwap`]); a
//! call task takes its own `Arc` at the start and keeps it to the end, so a
//! reload never changes a running call.

use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::ratelimit::{CallerRateLimiter, WebhookRateLimiter};

use super::{RATE_LIMIT_CALLERS, RATE_LIMIT_CLIENTS, ServeError};

/// One generation of the reloadable state.
pub(crate) struct Live {
    pub(crate) config: Config,
    /// `server.tls`, loaded from its files (again on every reload, so a
    /// renewed certificate at the same path is taken up).
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    /// `limits.webhook_rate_per_ip`, when set.
    pub(crate) rate_limiter: Option<Arc<Mutex<WebhookRateLimiter>>>,
    /// `limits.calls_per_caller_per_minute`, when set.
    pub(crate) caller_limiter: Option<Arc<Mutex<CallerRateLimiter>>>,
}

impl Live {
    /// Builds the state for `config`. With `previous`, a rate limiter whose
    /// rate did not change is shared rather than made anew, so a reload
    /// does not hand every client and caller a fresh allowance.
    pub(crate) fn new(config: Config, previous: Option<&Live>) -> Result<Live, ServeError> {
        let tls = match &config.server.tls {
            Some(files) => Some(tokio_rustls::TlsAcceptor::from(
                crate::tls::load_server_config(&files.cert, &files.key).map_err(ServeError::Tls)?,
            )),
            None => None,
        };
        let before = previous.map(|p| &p.config.limits);
        let rate_limiter = match config.limits.webhook_rate_per_ip {
            Some(rate) if before.and_then(|l| l.webhook_rate_per_ip) == Some(rate) => {
                previous.and_then(|p| p.rate_limiter.clone())
            }
            Some(rate) => Some(Arc::new(Mutex::new(WebhookRateLimiter::new(rate, RATE_LIMIT_CLIENTS)))),
            None => None,
        };
        let caller_limiter = match config.limits.calls_per_caller_per_minute {
            Some(rate) if before.and_then(|l| l.calls_per_caller_per_minute) == Some(rate) => {
                previous.and_then(|p| p.caller_limiter.clone())
            }
            Some(rate) => Some(Arc::new(Mutex::new(CallerRateLimiter::new(rate, RATE_LIMIT_CALLERS)))),
            None => None,
        };
        Ok(Live { config, tls, rate_limiter, caller_limiter })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServeArgs;

    fn testdata(name: &str) -> String {
        format!("{}/src/testdata/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn load(dir: &tempfile::TempDir, toml: &str) -> Config {
        let path = dir.path().join("voxproxy.toml");
        std::fs::write(&path, toml).unwrap();
        let args = ServeArgs { config: Some(path), ..ServeArgs::default() };
        Config::load(&args, [("TWILIO_AUTH_TOKEN", "token")]).unwrap()
    }

    fn tls_toml(cert: &str) -> String {
        format!("[server.tls]\ncert = \"{cert}\"\nkey = \"{}\"\n", testdata("ec-key-pkcs8.pem"))
    }

    #[test]
    fn certificate_files_are_read_on_every_build() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::copy(testdata("ec-cert.pem"), &cert).unwrap();
        let config = load(&dir, &tls_toml(cert.to_str().unwrap()));
        let live = Live::new(config.clone(), None).unwrap();
        assert!(live.tls.is_some());
        // The same path, a file that went bad since: the reload is refused.
        std::fs::write(&cert, "not a certificate\n").unwrap();
        assert!(matches!(Live::new(config, Some(&live)), Err(ServeError::Tls(_))));
    }

    #[test]
    fn a_rate_limiter_is_kept_while_its_rate_stays() {
        let dir = tempfile::tempdir().unwrap();
        let limits = |per_ip: u32| {
            format!("[limits]\nwebhook_rate_per_ip = {per_ip}\ncalls_per_caller_per_minute = 3\n")
        };
        let first = Live::new(load(&dir, &limits(10)), None).unwrap();
        let second = Live::new(load(&dir, &limits(20)), Some(&first)).unwrap();
        let (a, b) = (first.rate_limiter.as_ref().unwrap(), second.rate_limiter.as_ref().unwrap());
        assert!(!Arc::ptr_eq(a, b), "a new rate gets a new limiter");
        let (a, b) = (first.caller_limiter.as_ref().unwrap(), second.caller_limiter.as_ref().unwrap());
        assert!(Arc::ptr_eq(a, b), "the same rate keeps the callers' counts");
        let unset = Live::new(load(&dir, ""), Some(&second)).unwrap();
        assert!(unset.caller_limiter.is_none(), "calls_per_caller_per_minute unset: no limiter");
    }
}
