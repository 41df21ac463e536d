//! What the demo prints: one line per step with ✓/✗ and its time, then a summary; or,
//! with `--json`, one JSON object with every step for machines.

use std::time::Instant;

use anyhow::{Context as _, Result};
use serde_json::json;

/// One step's outcome.
struct StepResult {
    name: &'static str,
    ok: bool,
    detail: String,
    millis: u128,
}

/// The steps run so far, and how to print them.
pub struct Report {
    json: bool,
    steps: Vec<StepResult>,
}

impl Report {
    /// An empty report printing for people, or as JSON at the end when `json`.
    pub fn new(json: bool) -> Self {
        Self {
            json,
            steps: Vec::new(),
        }
    }

    /// Runs one step, prints it, and returns its error if it failed (which stops the
    /// demo).
    pub fn step(
        &mut self,
        name: &'static str,
        body: impl FnOnce() -> Result<String>,
    ) -> Result<()> {
        self.step_with(name, || body().map(|detail| ((), detail)))
    }

    /// Like [`Report::step`], handing back what the step made.
    pub fn step_with<T>(
        &mut self,
        name: &'static str,
        body: impl FnOnce() -> Result<(T, String)>,
    ) -> Result<T> {
        let started = Instant::now();
        let outcome = body();
        let millis = started.elapsed().as_millis();
        let (ok, detail) = match &outcome {
            Ok((_, detail)) => (true, detail.clone()),
            Err(error) => (false, format!("{error:#}")),
        };
        if !self.json {
            println!(
                "{} {name} ({millis} ms)\n    {}",
                if ok { "✓" } else { "✗" },
                detail.replace('\n', "\n    ")
            );
        }
        self.steps.push(StepResult {
            name,
            ok,
            detail,
            millis,
        });
        outcome
            .map(|(value, _)| value)
            .with_context(|| format!("step {name:?} failed"))
    }

    /// Prints the end of the report: the JSON object, or the count of passed steps and
    /// why the demo stopped.
    pub fn finish(&self, outcome: &Result<()>) {
        if self.json {
            let steps: Vec<_> = self
                .steps
                .iter()
                .map(
                    |s| json!({"step": s.name, "ok": s.ok, "detail": s.detail, "millis": s.millis}),
                )
                .collect();
            println!("{}", json!({"ok": outcome.is_ok(), "steps": steps}));
            return;
        }
        let passed = self.steps.iter().filter(|s| s.ok).count();
        println!("\n{passed} passed, {} failed", self.steps.len() - passed);
        if let Err(error) = outcome {
            println!("stopped: {error:#}");
        }
    }
}
