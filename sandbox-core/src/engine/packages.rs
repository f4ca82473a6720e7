//! The engine's packages step, shared by one-shot runs and session installs: the one place the
//! policy's package rules are checked — what the request asks for before anything is fetched,
//! what was prepared on every use (cached or not).

use std::time::Instant;

use crate::language::Language;
use crate::packages::{PackageError, PackagePlan, PackageRequest, PackageTarget, PreparedPackages};

use super::Inner;

/// Why packages could not be made available.
pub(crate) enum PackageFailure {
    /// The request's doing (a rule, a package that cannot be installed safely): `rejected`.
    Rejected(String),
    /// The host's (an unreachable index, a failed installer): `sandbox_error`.
    Failed(String),
}

impl PackageFailure {
    /// The message.
    pub(crate) fn message(self) -> String {
        match self {
            PackageFailure::Rejected(m) | PackageFailure::Failed(m) => m,
        }
    }
}

/// The interpreter `language`'s packages must fit, asked of the executor once per language.
async fn target(engine: &Inner, language: &dyn Language) -> Result<PackageTarget, PackageFailure> {
    let known = engine
        .package_targets
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(language.name())
        .cloned();
    if let Some(t) = known {
        return Ok(t);
    }
    let t = engine
        .executor
        .package_target(language)
        .await
        .map_err(|e| {
            PackageFailure::Failed(format!(
                "the {} interpreter could not be identified for packages: {e}",
                language.name()
            ))
        })?;
    engine
        .package_targets
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(language.name(), t.clone());
    Ok(t)
}

/// Prepares `plan`'s packages for `language` under the rules of policy `policy`.
pub(crate) async fn prepare(
    engine: &Inner,
    language: &dyn Language,
    plan: &PackagePlan,
    policy: &str,
) -> Result<PreparedPackages, PackageFailure> {
    let begun = Instant::now();
    let Some(provider) = &engine.packages else {
        return Err(PackageFailure::Rejected(
            "packages are not available: this engine has no package provider".into(),
        ));
    };
    plan.check_requested(policy)
        .map_err(|r| PackageFailure::Rejected(r.message))?;
    let target = target(engine, language).await?;
    let request = PackageRequest {
        language: language.name(),
        list: &plan.list,
        target: &target,
        index: &plan.rules.index,
    };
    let mut prepared = provider.prepare(&request).await.map_err(|e| match e {
        PackageError::Refused(m) => PackageFailure::Rejected(m),
        e => PackageFailure::Failed(format!("packages could not be prepared: {e}")),
    })?;
    plan.check_prepared(&prepared.report, policy)
        .map_err(|r| PackageFailure::Rejected(r.message))?;
    prepared.report.prepare_time = begun.elapsed().as_secs_f64();
    tracing::debug!(
        ecosystem = %plan.list.ecosystem,
        cached = prepared.report.cached,
        packages = prepared.report.installed.len(),
        seconds = prepared.report.prepare_time,
        "packages prepared"
    );
    Ok(prepared)
}
