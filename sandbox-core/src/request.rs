//! The execution request: the wire format of the original plan, extended but never broken.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A request to run a program. The plan's example request parses unchanged.
///
/// Numeric fields are signed or floating point on purpose: a negative or fractional value is
/// reported by validation with a clear message instead of a parser error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionRequest {
    /// Caller-chosen id echoed in the result; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `python`, `javascript` (`js`, `node`), `bash` (`sh`, `shell`), `go`, `rust` or `auto`.
    pub language: String,
    /// The program's source.
    pub code: String,
    /// Lines fed to standard input, each followed by a newline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Vec<String>>,
    /// Raw standard input (exclusive with `inputs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Wall-clock limit of the run step in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// The plan's network switch; `false` unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_access: Option<bool>,
    /// A domain allowlist for network access through the proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkRequest>,
    /// Packages to make available (not supported yet: such a request is rejected).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    /// Extra files placed in the workspace beside the program.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileSpec>,
    /// Arguments passed to the program.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables for the program (nothing is inherited from the host).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Limits the request asks for; they can only tighten the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsRequest>,
    /// Workspace files to return with the result: relative paths or globs (`*.png`,
    /// `out/**/*.csv`), at most 32.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
}

impl ExecutionRequest {
    /// A request for `code` in `language` with everything else defaulted.
    pub fn new(language: impl Into<String>, code: impl Into<String>) -> Self {
        Self {
            language: language.into(),
            code: code.into(),
            ..Self::default()
        }
    }

    /// Parses a request from JSON.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Whether the request asks for any network access.
    pub fn wants_network(&self) -> bool {
        self.network_access == Some(true)
            || self.network.as_ref().is_some_and(|n| !n.allow.is_empty())
    }
}

/// Network access through the allowlisting proxy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkRequest {
    /// Domains (optionally `*.` wildcards and `:port`) the program may reach.
    #[serde(default)]
    pub allow: Vec<String>,
}

/// A file placed in the workspace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Relative path inside the workspace.
    pub path: String,
    /// UTF-8 content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Binary content, base64-encoded (exclusive with `content`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_base64: Option<String>,
}

/// Limits a request asks for. Absent fields take the policy's value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsRequest {
    /// Memory (including swap) in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<i64>,
    /// CPU share, in cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Writable workspace and /tmp together, in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mb: Option<i64>,
    /// Processes and threads alive at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_processes: Option<i64>,
    /// Bytes of stdout and stderr together before the run is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<i64>,
    /// CPU seconds per process (`RLIMIT_CPU`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_time_secs: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_example_parses_unchanged() {
        let text = r#"{
          "language": "python",
          "code": "print('Hello, World!')",
          "inputs": ["input1", "input2"],
          "timeout": 30,
          "network_access": false,
          "packages": ["requests", "numpy"]
        }"#;
        let req = ExecutionRequest::from_json(text).unwrap_or_default();
        assert_eq!(req.language, "python");
        assert_eq!(req.timeout, Some(30.0));
        assert_eq!(req.packages, vec!["requests", "numpy"]);
        assert_eq!(req.inputs.as_deref().map(<[String]>::len), Some(2));
        assert!(!req.wants_network());
    }

    #[test]
    fn unknown_fields_are_errors() {
        assert!(
            ExecutionRequest::from_json(r#"{"language":"python","code":"1","timeuot":3}"#).is_err()
        );
    }
}
