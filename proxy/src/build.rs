//! What this binary is: its version and the git revision it was built from
//! (set by `proxy/build.rs`; `unknown` when built without git and without
//! `VOXPROXY_REVISION`).

/// The crate version, such as `0.1.0`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit, abbreviated to 12 hex digits, or `unknown`.
pub const REVISION: &str = env!("VOXPROXY_REVISION");
/// What `voxproxy --version` prints after the program's name.
pub const VERSION_LINE: &str =
    concat!(env!("CARGO_PKG_VERSION"), " (revision ", env!("VOXPROXY_REVISION"), ")");

#[cfg(test)]
mod tests {
    #[test]
    fn the_revision_is_known_in_a_git_checkout() {
        assert!(super::VERSION_LINE.starts_with(super::VERSION));
        // The tests run from the repository, so git knows the commit.
        let from_git = std::process::Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success());
        if let Some(out) = from_git
            && std::env::var_os("VOXPROXY_REVISION").is_none()
        {
            // The binary may lag one commit behind HEAD only if cargo did
            // not rebuild, which the rerun-if-changed lines prevent.
            assert_eq!(super::REVISION, String::from_utf8_lossy(&out.stdout).trim());
        }
    }
}
