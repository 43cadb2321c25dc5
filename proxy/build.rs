//! Sets `VOXPROXY_REVISION` for `voxproxy --version` and
//! `voxproxy_build_info`: the git commit the binary is built from, from
//! the `VOXPROXY_REVISION` variable when the build sets it (a tarball or a
//! container build without `.git`), else from `git`, else `unknown`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=VOXPROXY_REVISION");
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let given = std::env::var("VOXPROXY_REVISION").ok().filter(|r| !r.trim().is_empty());
    let revision = given.or_else(|| {
        let revision = git(&dir, &["rev-parse", "--short=12", "HEAD"])?;
        // Rebuild when HEAD moves: HEAD itself (a checkout), the branch it
        // names (a commit) and packed-refs (a gc that packs the branch).
        let git_dir = git(&dir, &["rev-parse", "--absolute-git-dir"]).map(PathBuf::from);
        let common =
            git(&dir, &["rev-parse", "--path-format=absolute", "--git-common-dir"]).map(PathBuf::from);
        // Only files that exist: cargo reruns a script watching a missing
        // file on every build, which would rebuild this crate each time.
        let mut watch = Vec::new();
        if let Some(git_dir) = &git_dir {
            watch.push(git_dir.join("HEAD"));
        }
        if let Some(common) = &common {
            watch.push(common.join("packed-refs"));
            if let Some(branch) = git(&dir, &["symbolic-ref", "-q", "HEAD"]) {
                watch.push(common.join(branch));
            }
        }
        for path in watch.iter().filter(|p| p.is_file()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
        Some(revision)
    });
    let revision = revision.unwrap_or_else(|| "unknown".to_owned());
    // Only what a label value and a version line can hold safely.
    let revision: String = revision
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .take(64)
        .collect();
    println!("cargo:rustc-env=VOXPROXY_REVISION={revision}");
}
