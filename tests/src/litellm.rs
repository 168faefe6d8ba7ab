//! LiteLLM's proxy (installed into .tools/venv by `scripts/install.sh
//! --test`) as a process of its own: a real OpenAI-compatible server for
//! the tests, and the gateway the front door benchmark compares with.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use crate::openai_process::OpenAiProcess;

/// A running LiteLLM proxy, stopped when dropped.
pub type LiteLlm = OpenAiProcess;

/// Starts LiteLLM on a free port with `config` (its YAML) and `master_key`,
/// offline (the local cost map, no telemetry), and waits until its
/// `/v1/models` answers.
pub async fn start(config: &str, master_key: &str) -> LiteLlm {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/litellm");
    let args = |port: u16, dir: &Path| -> Vec<OsString> {
        let config_path = dir.join("config.yaml");
        std::fs::write(&config_path, config).unwrap();
        vec![
            "--config".into(),
            config_path.into(),
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string().into(),
        ]
    };
    OpenAiProcess::start(
        &bin,
        args,
        &[
            ("LITELLM_MASTER_KEY", master_key),
            ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
            ("LITELLM_TELEMETRY", "False"),
            ("DISABLE_SCHEMA_UPDATE", "True"),
        ],
        Some(master_key),
        Duration::from_secs(60),
    )
    .await
}
