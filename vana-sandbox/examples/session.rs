//! A session: one sandbox across calls, as an agent uses it — load data in one cell, work on it
//! in the next, run a shell command, get a chart back (needs root, like the native backend).
//!
//! `cargo run -p vana-sandbox --example session`

use vana_sandbox::{ExecutionRequest, Sandbox, SessionOptions, Status};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sandbox = Sandbox::native()?;
    let session = sandbox.session(SessionOptions::default()).await?;

    session
        .files()
        .write("sales.csv", b"month,units\njan,3\nfeb,5\nmar,8\n".to_vec())
        .await?;
    let r = session
        .run_code(
            "python",
            "import csv\nrows = list(csv.DictReader(open('sales.csv')))\nlen(rows)",
        )
        .await?;
    println!("cell 1: {} rows", r.results[0].0["text/plain"]);

    let r = session
        .run_code(
            "python",
            "total = sum(int(r['units']) for r in rows)\nprint('total', total)",
        )
        .await?;
    print!("cell 2: {}", r.output);
    assert_eq!(r.status, Status::Success);

    let r = session.command("ls -la | wc -l").await?;
    print!("command: {}", r.output);

    // A chart, when matplotlib is installed: figures come back as PNG results.
    let mut chart = ExecutionRequest::new(
        "python",
        "try:\n    import matplotlib.pyplot as plt\n    plt.bar([r['month'] for r in rows], [int(r['units']) for r in rows])\nexcept ImportError:\n    print('no matplotlib here')",
    );
    chart.outputs = vec!["*.csv".into()];
    let r = session.run(chart, None).await?;
    let pngs = r
        .results
        .iter()
        .filter(|d| d.0.contains_key("image/png"))
        .count();
    println!("cell 3: {pngs} figure(s), {} file(s) back", r.files.len());

    session.close().await?;
    Ok(())
}
