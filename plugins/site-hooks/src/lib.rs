//! An example site plugin, with two pipeline hooks:
//!
//! - before `pack`: writes `/etc/autogentoo-build-info` (the system, the build time, the root
//!   and the snapshot it was cloned from, the backend) into a layer of its own in the system's
//!   output directory, which the pack puts last. The root volume is never touched, so the file
//!   is in the image without being in the root. The time is `SOURCE_DATE_EPOCH` when set, so
//!   reproducible builds stay reproducible.
//! - after `kernel`: signs the EFI image for Secure Boot with `sbsign` (Debian's `sbsigntool`)
//!   when a key and certificate are configured, writing `SYSTEM.signed.efi` beside the image;
//!   without them it says it skipped signing. They are the plugin's settings in the site
//!   config, both or neither, relative to the site directory unless absolute:
//!
//!   ```toml
//!   [plugins.site-hooks]
//!   sign_key = "keys/db.key"    # a PEM private key
//!   sign_cert = "keys/db.crt"   # its PEM certificate
//!   ```

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use autogentoo_core::civil_time::timestamp;
use autogentoo_plugin_api::{
    ExtraLayer, HookError, HookOutcome, PipelineHooks, Plugin, Step, SETTING_PREFIX,
};

/// The file the pack hook adds, relative to the image's root.
pub const BUILD_INFO: &str = "etc/autogentoo-build-info";
/// The settings naming the signing key and certificate, PEM files.
pub const KEY_SETTING: &str = "sign_key";
pub const CERT_SETTING: &str = "sign_cert";

fn define() -> Plugin {
    Plugin::new().pipeline_hooks(SiteHooks)
}

autogentoo_plugin_api::export_plugin!("site-hooks", define);

struct SiteHooks;

impl PipelineHooks for SiteHooks {
    fn before(&self, step: &Step) -> Result<HookOutcome, HookError> {
        match step.name.as_str() {
            "pack" => build_info_layer(step),
            _ => Ok(HookOutcome::default()),
        }
    }

    fn after(&self, step: &Step) -> Result<HookOutcome, HookError> {
        match step.name.as_str() {
            "kernel" => sign(step),
            _ => Ok(HookOutcome::default()),
        }
    }
}

fn input<'a>(values: &'a autogentoo_plugin_api::Values, key: &str) -> Result<&'a str, HookError> {
    values
        .text(key)
        .ok_or_else(|| format!("the step gave no `{key}`").into())
}

/// Writes the build-info file into a fresh layer in the system's output directory.
fn build_info_layer(step: &Step) -> Result<HookOutcome, HookError> {
    let out_dir = PathBuf::from(input(&step.inputs, "out_dir")?);
    fs::create_dir_all(&out_dir).map_err(|e| format!("create {}: {e}", out_dir.display()))?;
    let layer = out_dir.join("build-info-layer");
    if layer.exists() {
        fs::remove_dir_all(&layer).map_err(|e| format!("remove {}: {e}", layer.display()))?;
    }
    let file = layer.join(BUILD_INFO);
    let etc = file.parent().expect("the file is in etc/");
    make_dir(&layer)?;
    make_dir(etc)?;
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) => value
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("SOURCE_DATE_EPOCH={value} is not a number of seconds"))?,
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    };
    let origin = step.inputs.text("root_origin").unwrap_or("");
    let text = format!(
        "system={}\nbuilt={}\nbuilt_epoch={epoch}\nroot={}\nroot_origin={}\nbackend={}\n",
        step.system,
        timestamp(epoch),
        input(&step.inputs, "root")?,
        if origin.is_empty() { "none" } else { origin },
        input(&step.inputs, "backend")?,
    );
    fs::write(&file, text).map_err(|e| format!("write {}: {e}", file.display()))?;
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644))
        .map_err(|e| format!("chmod {}: {e}", file.display()))?;
    Ok(HookOutcome {
        layers: vec![ExtraLayer {
            name: "site-hooks:build-info".into(),
            path: layer,
        }],
        notes: vec![format!("/{BUILD_INFO} added for {}", step.system)],
    })
}

fn make_dir(dir: &Path) -> Result<(), HookError> {
    fs::create_dir(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod {}: {e}", dir.display()).into())
}

/// A path from the site config: relative ones are taken from the site directory.
fn site_path(step: &Step, path: &Path) -> PathBuf {
    match step.inputs.path("site_dir") {
        Some(site) if path.is_relative() => site.join(path),
        _ => path.to_owned(),
    }
}

/// Signs the kernel step's image when a key and certificate are configured.
fn sign(step: &Step) -> Result<HookOutcome, HookError> {
    let image = PathBuf::from(input(&step.outputs, "image")?);
    let setting = |key: &str| step.inputs.path(&format!("{SETTING_PREFIX}{key}"));
    let (key, cert) = match (setting(KEY_SETTING), setting(CERT_SETTING)) {
        (Some(key), Some(cert)) => (site_path(step, key), site_path(step, cert)),
        (None, None) => {
            return Ok(HookOutcome::note(format!(
                "skipped signing {}: no key configured ([plugins.site-hooks] \
                 {KEY_SETTING} and {CERT_SETTING})",
                image.display()
            )))
        }
        _ => {
            return Err(format!(
                "[plugins.site-hooks]: set both {KEY_SETTING} and {CERT_SETTING}, or neither"
            )
            .into())
        }
    };
    for file in [&key, &cert] {
        if !file.is_file() {
            return Err(format!(
                "[plugins.site-hooks]: {} does not exist; check {KEY_SETTING} and {CERT_SETTING}",
                file.display()
            )
            .into());
        }
    }
    let signed = image.with_extension("signed.efi");
    let partial = image.with_extension("signed.efi.partial");
    let output = Command::new("sbsign")
        .arg("--key")
        .arg(&key)
        .arg("--cert")
        .arg(&cert)
        .arg("--output")
        .arg(&partial)
        .arg(&image)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run sbsign ({e}); apt-get install sbsigntool"))?;
    if !output.status.success() {
        let _ = fs::remove_file(&partial);
        return Err(format!(
            "sbsign failed on {} ({}): {}",
            image.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    fs::rename(&partial, &signed).map_err(|e| format!("rename {}: {e}", signed.display()))?;
    Ok(HookOutcome::note(format!(
        "signed {} with {}",
        signed.display(),
        cert.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use autogentoo_plugin_api::Values;

    /// The kernel step as the hook sees it after the step, with `settings` from the site config
    /// of a site in `site`.
    fn kernel_step(site: &Path, settings: &[(&str, &str)]) -> Step {
        let mut inputs = Values::default().with("site_dir", site);
        for (key, value) in settings {
            inputs.set(&format!("{SETTING_PREFIX}{key}"), value);
        }
        Step {
            system: "demo".into(),
            name: "kernel".into(),
            inputs,
            outputs: Values::default().with("image", site.join("demo.efi")),
        }
    }

    fn error_of(step: &Step) -> String {
        match sign(step) {
            Ok(outcome) => panic!("signing should fail: {outcome:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn without_settings_signing_is_skipped_and_said() {
        let site = tempfile::tempdir().unwrap();
        let outcome = sign(&kernel_step(site.path(), &[])).unwrap();
        assert_eq!(outcome.notes.len(), 1, "{outcome:?}");
        assert!(
            outcome.notes[0].starts_with("skipped signing"),
            "{outcome:?}"
        );
    }

    #[test]
    fn half_a_setting_or_a_missing_file_is_an_error_naming_it() {
        let site = tempfile::tempdir().unwrap();
        let only_key = error_of(&kernel_step(site.path(), &[(KEY_SETTING, "keys/db.key")]));
        assert_eq!(
            only_key,
            "[plugins.site-hooks]: set both sign_key and sign_cert, or neither"
        );
        let missing = error_of(&kernel_step(
            site.path(),
            &[
                (KEY_SETTING, "keys/db.key"),
                (CERT_SETTING, "/no/such/db.crt"),
            ],
        ));
        let key = site.path().join("keys/db.key");
        assert_eq!(
            missing,
            format!(
                "[plugins.site-hooks]: {} does not exist; check sign_key and sign_cert",
                key.display()
            ),
            "a relative path is taken from the site directory"
        );
        assert!(!site.path().join("demo.signed.efi").exists());
    }
}
