//! Runs a Python snippet and a request with limits through the native backend (needs root).
//!
//! `cargo run -p vana-sandbox --example hello`

use vana_sandbox::{ExecutionRequest, LimitsRequest, Sandbox, Status};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sandbox = Sandbox::native()?;

    let result = sandbox.run("python", "print('Hello, World!')").await?;
    print!("{}", result.output);
    assert_eq!(result.status, Status::Success);

    let mut request =
        ExecutionRequest::new("python", "a = []\nwhile True:\n    a.append(' ' * 10**6)\n");
    request.limits = Some(LimitsRequest {
        memory_mb: Some(64),
        ..Default::default()
    });
    let result = sandbox.execute(request).await?;
    println!(
        "memory bomb: {} ({})",
        result.status,
        result.error.unwrap_or_default()
    );
    assert_eq!(result.status, Status::MemoryLimit);
    Ok(())
}
