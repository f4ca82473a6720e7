//! `image build`: the Docker backend's runtime image, from Debian packages (no registry).

use std::process::ExitCode;

use clap::Subcommand;
use vana_sandbox::image::ImageBuild;

#[derive(Subcommand, Debug)]
pub(crate) enum ImageCmd {
    /// Build the runtime image (debootstrap + docker import). Needs root and debootstrap. An
    /// image of ours built with an older layout is rebuilt.
    Build {
        /// The larger image with Go and gcc (Rust's linker).
        #[arg(long)]
        full: bool,
        /// Image name (`repo:tag`).
        #[arg(long)]
        tag: Option<String>,
        /// Debian mirror.
        #[arg(long)]
        mirror: Option<String>,
        /// Rebuild even when the image exists and is current.
        #[arg(long)]
        force: bool,
    },
}

pub(crate) async fn main(cmd: ImageCmd) -> ExitCode {
    let ImageCmd::Build {
        full,
        tag,
        mirror,
        force,
    } = cmd;
    let mut build = if full {
        ImageBuild::full()
    } else {
        ImageBuild::runtime()
    };
    if let Some(t) = tag {
        build.tag = t;
    }
    if let Some(m) = mirror {
        build.mirror = m;
    }
    let docker = match bollard_connect().await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("vana-sandbox: {e}");
            return ExitCode::from(1);
        }
    };
    if !force && build.is_current(&docker).await {
        println!("{} exists (use --force to rebuild)", build.tag);
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "building {} from Debian {} ({})...",
        build.tag,
        build.suite,
        build.packages.join(", ")
    );
    match build.build(&docker).await {
        Ok(tag) => {
            println!("{tag}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vana-sandbox: {e}");
            ExitCode::from(1)
        }
    }
}

async fn bollard_connect() -> Result<vana_sandbox::image::Docker, String> {
    vana_sandbox::image::connect().await
}
