//! What a build reports while it runs: typed events, handed to an [`Observer`] in the order
//! they happen. The command line renders them as lines (or one JSON object per line with
//! `--json`); a recorder keeps them; a worker streams them to its server.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// The steps of the standard pipeline, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepName {
    /// The workdir's layout and caches.
    Workdir,
    /// The system's root, cloned from its stage when missing.
    Root,
    /// The system's commands, run inside the root.
    Commands,
    /// The image tree, for a system that packs one instead of its root.
    Image,
    /// The initramfs.
    Pack,
    /// The kernel, with the initramfs embedded.
    Kernel,
}

impl StepName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Workdir => "workdir",
            Self::Root => "root",
            Self::Commands => "commands",
            Self::Image => "image",
            Self::Pack => "pack",
            Self::Kernel => "kernel",
        }
    }
}

impl std::fmt::Display for StepName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a file a step made is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactKind {
    /// The packed initramfs.
    Initramfs,
    /// The packer's manifest of the initramfs.
    InitramfsManifest,
    /// The image's packages, one `CATEGORY/PF:SLOT USE="…"` line each.
    PackageList,
    /// The EFI application: the kernel with the initramfs embedded.
    EfiImage,
    /// The kernel's final `.config`.
    KernelConfig,
    /// The kernel's `System.map`.
    SystemMap,
    /// The kernel build's manifest (inputs, outputs, hashes).
    KernelManifest,
    /// What the commands a step ran inside the root printed.
    StepLog,
}

/// What a build starts from, besides the site config: for its record, and for comparing two
/// builds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Inputs {
    /// The system's stage: `NAME (created TIME)`.
    pub stage: String,
    /// The repository snapshot roots mount (its path), or empty without one.
    pub repo: String,
    /// The packages the system's image asks for; empty for a system without an image table.
    pub packages: Vec<String>,
}

/// One event of a build.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The steps this system has, in order, before any runs (a system without a kernel has no
    /// kernel step; one without an image table no image step).
    Plan {
        system: String,
        pretend: bool,
        steps: Vec<StepName>,
        inputs: Inputs,
    },
    /// A step starts; `why` says what it does.
    StepStarted { step: StepName, why: String },
    /// With `pretend`: the step would run.
    StepWouldRun { step: StepName, why: String },
    /// A step is not needed (its inputs are unchanged, or the system does not use it).
    StepSkipped { step: StepName, why: String },
    /// A line a command printed inside the root during a step; it is in the step's log too.
    Log { step: StepName, line: String },
    /// A plugin's hook had something to say about a step.
    Note {
        step: StepName,
        plugin: String,
        text: String,
    },
    /// A file of the build's results, in its final place: `made` by this build, or kept from
    /// an earlier one by a step that was skipped.
    Artifact {
        step: StepName,
        kind: ArtifactKind,
        path: PathBuf,
        made: bool,
    },
    /// A step ended well.
    StepFinished {
        step: StepName,
        #[serde(serialize_with = "millis")]
        duration: Duration,
        /// One line on what it made, for people.
        summary: String,
    },
    /// A step failed; the build stops with this error.
    StepFailed { step: StepName, error: String },
    /// The build ended well: what it made (with pretend, what it would make), `image` for a
    /// system with a kernel (its EFI application), else `initramfs`.
    Finished {
        system: String,
        kind: String,
        path: PathBuf,
    },
}

fn millis<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(duration.as_millis().try_into().unwrap_or(u64::MAX))
}

/// Receives a build's events. Called on the build's own thread, in order; an observer that
/// is slow slows the build, so one that ships events elsewhere queues them.
pub trait Observer {
    fn event(&mut self, event: &Event);
}

/// Two observers, each told every event: the first, then the second.
impl<A: Observer, B: Observer> Observer for (A, B) {
    fn event(&mut self, event: &Event) {
        self.0.event(event);
        self.1.event(event);
    }
}

/// An observer that may be absent (a recorder when nothing is recorded).
impl<O: Observer> Observer for Option<O> {
    fn event(&mut self, event: &Event) {
        if let Some(observer) = self {
            observer.event(event);
        }
    }
}

/// Keeps every event, for tests and for callers that look at them afterwards.
impl Observer for Vec<Event> {
    fn event(&mut self, event: &Event) {
        self.push(event.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialise_with_their_kind_and_snake_case_names() {
        let event = Event::StepFinished {
            step: StepName::Pack,
            duration: Duration::from_millis(1500),
            summary: "packed".into(),
        };
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            serde_json::json!({
                "event": "step_finished", "step": "pack", "duration": 1500, "summary": "packed"
            })
        );
        let event = Event::Artifact {
            step: StepName::Kernel,
            kind: ArtifactKind::EfiImage,
            path: "/w/out/web/web.efi".into(),
            made: true,
        };
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            serde_json::json!({
                "event": "artifact", "step": "kernel", "kind": "efi_image",
                "path": "/w/out/web/web.efi", "made": true
            })
        );
    }
}
