//! What changed between two builds: the packages of their images (added, removed, another
//! version or other USE flags) and their inputs.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::Build;

/// One line of an image's package list: `CATEGORY/PF:SLOT USE="…"`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Package {
    /// `CATEGORY/PN`: what stays the same across versions.
    name: String,
    /// `PV[-rN]:SLOT` and the USE flags: what a change is.
    version: String,
    flags: String,
}

fn parse(line: &str) -> Option<Package> {
    let (atom, flags) = match line.split_once(' ') {
        Some((atom, rest)) => (atom, rest.trim().to_owned()),
        None => (line, String::new()),
    };
    let (pf, slot) = atom.split_once(':').unwrap_or((atom, ""));
    let (category, pf) = pf.split_once('/')?;
    // PF is PN-PV[-rN]; PV starts with a digit after the last hyphen of PN.
    let without_revision = match pf.rsplit_once("-r") {
        Some((head, rev)) if !rev.is_empty() && rev.bytes().all(|b| b.is_ascii_digit()) => head,
        _ => pf,
    };
    let split = without_revision
        .match_indices('-')
        .map(|(at, _)| at)
        .rfind(|&at| {
            without_revision[at + 1..]
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_digit())
        })?;
    Some(Package {
        name: format!("{category}/{}", &pf[..split]),
        version: format!("{}:{slot}", &pf[split + 1..]),
        flags,
    })
}

fn packages(contents: Option<&str>) -> BTreeMap<String, Package> {
    contents
        .unwrap_or_default()
        .lines()
        .filter_map(parse)
        .map(|package| (package.name.clone(), package))
        .collect()
}

/// A package in both builds, changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Changed {
    pub package: String,
    /// `PV:SLOT USE="…"` in the first build.
    pub from: String,
    pub to: String,
}

/// An input that differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InputChange {
    pub input: &'static str,
    pub from: String,
    pub to: String,
}

/// What changed from build A to build B.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    /// `CATEGORY/PN-PV:SLOT` with its USE flags.
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<Changed>,
    pub inputs: Vec<InputChange>,
}

fn shown(package: &Package) -> String {
    if package.flags.is_empty() {
        package.version.clone()
    } else {
        format!("{} {}", package.version, package.flags)
    }
}

/// Compares two builds' image contents (`CATEGORY/PF:SLOT USE="…"` lines) and inputs.
pub fn diff(a: &Build, a_contents: Option<&str>, b: &Build, b_contents: Option<&str>) -> Diff {
    let before = packages(a_contents);
    let after = packages(b_contents);
    let mut diff = Diff::default();
    for (name, old) in &before {
        match after.get(name) {
            None => diff.removed.push(format!("{name}-{}", shown(old))),
            Some(new) if new != old => diff.changed.push(Changed {
                package: name.clone(),
                from: shown(old),
                to: shown(new),
            }),
            Some(_) => {}
        }
    }
    for (name, new) in &after {
        if !before.contains_key(name) {
            diff.added.push(format!("{name}-{}", shown(new)));
        }
    }
    let inputs = [
        ("site config", &a.config_hash, &b.config_hash),
        ("stage", &a.stage, &b.stage),
        ("repository snapshot", &a.repo, &b.repo),
    ];
    for (input, from, to) in inputs {
        if from != to {
            diff.inputs.push(InputChange {
                input,
                from: from.clone(),
                to: to.clone(),
            });
        }
    }
    if a.packages != b.packages {
        diff.inputs.push(InputChange {
            input: "packages asked for",
            from: a.packages.join(" "),
            to: b.packages.join(" "),
        });
    }
    diff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_lines_split_into_name_version_and_flags() {
        assert_eq!(
            parse("app-misc/greet-1.0:0 USE=\"-shout\""),
            Some(Package {
                name: "app-misc/greet".into(),
                version: "1.0:0".into(),
                flags: "USE=\"-shout\"".into(),
            })
        );
        assert_eq!(
            parse("dev-libs/libgreet-1.0-r2:0/1").map(|p| (p.name, p.version)),
            Some(("dev-libs/libgreet".into(), "1.0-r2:0/1".into()))
        );
        assert_eq!(
            parse("media-libs/x264-0.0.20240513:0/164").map(|p| p.name),
            Some("media-libs/x264".into())
        );
        assert_eq!(
            parse("sys-libs/glibc-2.40-r5:2.2 USE=\"multiarch\"").map(|p| p.version),
            Some("2.40-r5:2.2".into())
        );
        assert_eq!(parse("not a package"), None);
    }

    fn build(config: &str, packages: &[&str]) -> Build {
        Build {
            system: "web".into(),
            number: 1,
            host: "h".into(),
            started_by: "u".into(),
            pid: 1,
            started_at: 0,
            ended_at: None,
            outcome: crate::Outcome::Succeeded,
            error: None,
            config_hash: config.into(),
            stage: "s".into(),
            repo: "r".into(),
            packages: packages.iter().map(|p| p.to_string()).collect(),
            inputs: String::new(),
            out_dir: "/o".into(),
            kept: false,
        }
    }

    #[test]
    fn added_removed_and_changed_packages_and_changed_inputs() {
        let a = build("c1", &["app-misc/greet"]);
        let b = build("c2", &["app-misc/greet", "app-misc/hello"]);
        let diff = diff(
            &a,
            Some("app-misc/greet-1.0:0 USE=\"-shout\"\ndev-libs/libgreet-1.0:0/1\nsys-apps/old-1:0\n"),
            &b,
            Some("app-misc/greet-1.0:0 USE=\"shout\"\ndev-libs/libgreet-1.1:0/2\napp-misc/hello-1.0:0\n"),
        );
        assert_eq!(diff.added, ["app-misc/hello-1.0:0"]);
        assert_eq!(diff.removed, ["sys-apps/old-1:0"]);
        assert_eq!(
            diff.changed,
            [
                Changed {
                    package: "app-misc/greet".into(),
                    from: "1.0:0 USE=\"-shout\"".into(),
                    to: "1.0:0 USE=\"shout\"".into(),
                },
                Changed {
                    package: "dev-libs/libgreet".into(),
                    from: "1.0:0/1".into(),
                    to: "1.1:0/2".into(),
                },
            ]
        );
        let inputs: Vec<&str> = diff.inputs.iter().map(|c| c.input).collect();
        assert_eq!(inputs, ["site config", "packages asked for"]);
    }
}
