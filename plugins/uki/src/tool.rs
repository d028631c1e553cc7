//! Running the external programs this plugin relies on (`xz`, `objdump`, `objcopy`), with errors
//! that name the program, and the Debian package to install when it is missing.

use std::fmt;
use std::io;
use std::process::{Command, ExitStatus, Output, Stdio};

use autogentoo_core::kernel::kernel_build::KernelError;
use autogentoo_core::pack::PackError;

/// A program and the Debian package that provides it.
#[derive(Clone, Copy, Debug)]
pub struct Tool {
    pub program: &'static str,
    pub package: &'static str,
}

pub const XZ: Tool = Tool {
    program: "xz",
    package: "xz-utils",
};
pub const OBJDUMP: Tool = Tool {
    program: "objdump",
    package: "binutils",
};
pub const OBJCOPY: Tool = Tool {
    program: "objcopy",
    package: "binutils",
};

/// Why a program did not do its part.
#[derive(Debug)]
pub enum ToolError {
    /// It is not installed.
    Missing(Tool),
    /// It could not be started for another reason.
    Spawn { tool: Tool, source: io::Error },
    /// It ran and failed; `stderr` is the last line it printed there, which is where these
    /// programs put the reason.
    Failed {
        tool: Tool,
        status: ExitStatus,
        stderr: String,
    },
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(tool) => write!(
                f,
                "`{}` is not installed: install {} (apt-get install {})",
                tool.program, tool.package, tool.package
            ),
            Self::Spawn { tool, source } => write!(f, "cannot run `{}`: {source}", tool.program),
            Self::Failed {
                tool,
                status,
                stderr,
            } if stderr.is_empty() => write!(f, "`{}` failed ({status})", tool.program),
            Self::Failed {
                tool,
                status,
                stderr,
            } => write!(f, "`{}` failed ({status}): {stderr}", tool.program),
        }
    }
}

impl std::error::Error for ToolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Spawn { source, .. } => Some(source),
            _ => None,
        }
    }
}

// The core's error types carry a plugin's failure as its message.
impl From<ToolError> for PackError {
    fn from(error: ToolError) -> Self {
        PackError::Failed(error.to_string())
    }
}

impl From<ToolError> for KernelError {
    fn from(error: ToolError) -> Self {
        KernelError::Failed(error.to_string())
    }
}

impl Tool {
    /// A command for the program.
    pub fn command(self) -> Command {
        Command::new(self.program)
    }

    /// The error for a failure to start it.
    pub fn spawn_error(self, source: io::Error) -> ToolError {
        if source.kind() == io::ErrorKind::NotFound {
            ToolError::Missing(self)
        } else {
            ToolError::Spawn { tool: self, source }
        }
    }

    /// The error for an unsuccessful exit, given what it wrote to stderr.
    pub fn failure(self, status: ExitStatus, stderr: &[u8]) -> ToolError {
        let text = String::from_utf8_lossy(stderr);
        let last = text.lines().rev().find(|l| !l.trim().is_empty());
        ToolError::Failed {
            tool: self,
            status,
            stderr: last.unwrap_or_default().trim().to_owned(),
        }
    }

    /// Runs `command` (made by [`Tool::command`]) to completion without input, and returns its
    /// output when it succeeds.
    pub fn output(self, mut command: Command) -> Result<Output, ToolError> {
        let output = command
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.spawn_error(e))?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(self.failure(output.status, &output.stderr))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_names_its_package() {
        let tool = Tool {
            program: "autogentoo-no-such-program",
            package: "no-such-package",
        };
        let error = tool.output(tool.command()).unwrap_err();
        assert!(matches!(error, ToolError::Missing(_)), "{error:?}");
        assert!(
            error
                .to_string()
                .contains("apt-get install no-such-package"),
            "{error}"
        );
    }

    #[test]
    fn a_failure_keeps_the_last_line_of_stderr() {
        let mut command = XZ.command();
        command.args(["-t", "/nonexistent/autogentoo.xz"]);
        let error = XZ.output(command).unwrap_err();
        let ToolError::Failed { stderr, .. } = &error else {
            panic!("{error:?}");
        };
        assert!(stderr.contains("/nonexistent/autogentoo.xz"), "{stderr}");
        assert!(!stderr.contains('\n'));
    }
}
