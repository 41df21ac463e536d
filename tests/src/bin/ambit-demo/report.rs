//! What the demo prints: one line per step with ✓/✗ and its time, then a summary table
//! and, when a step failed, which component to look at and where its log is; or, with
//! `--json`, one JSON object with the same for machines.

use std::time::{Duration, Instant};

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
    /// What to look at after a failure (see [`crate::components::diagnose`]).
    diagnosis: Option<String>,
}

impl Report {
    /// An empty report printing for people, or as JSON at the end when `json`.
    pub fn new(json: bool) -> Self {
        Self {
            json,
            steps: Vec::new(),
            diagnosis: None,
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

    /// Records what to look at after a failure.
    pub fn diagnosis(&mut self, text: String) {
        self.diagnosis = Some(text);
    }

    /// Prints the end of a run where every step passed: the JSON object, or the
    /// summary table.
    pub fn finish(&self) {
        if self.json {
            self.print_json(None);
        } else {
            self.print_summary();
        }
    }

    /// Prints the end of a run that stopped on `error`: the JSON object, or the summary
    /// table, the error and what to look at.
    pub fn stopped(&self, error: &anyhow::Error) {
        if self.json {
            self.print_json(Some(error));
            return;
        }
        self.print_summary();
        println!("\nstopped: {error:#}");
        if let Some(diagnosis) = &self.diagnosis {
            println!("{diagnosis}");
        }
    }

    fn print_json(&self, error: Option<&anyhow::Error>) {
        let steps: Vec<_> = self
            .steps
            .iter()
            .map(|s| json!({"step": s.name, "ok": s.ok, "detail": s.detail, "millis": s.millis}))
            .collect();
        let report = json!({
            "ok": error.is_none(),
            "steps": steps,
            "error": error.map(|e| format!("{e:#}")),
            "diagnosis": self.diagnosis,
        });
        println!("{report}");
    }

    /// The table of steps, their results and times, and the totals.
    fn print_summary(&self) {
        let width = self
            .steps
            .iter()
            .map(|s| s.name.chars().count())
            .max()
            .unwrap_or(0);
        println!("\n{:<width$}  result      time", "step");
        for step in &self.steps {
            let result = if step.ok { "✓" } else { "✗" };
            println!("{:<width$}    {result}   {:>7} ms", step.name, step.millis);
        }
        let passed = self.steps.iter().filter(|s| s.ok).count();
        let millis: u128 = self.steps.iter().map(|s| s.millis).sum();
        println!(
            "{passed} passed, {} failed, in {:.1} s",
            self.steps.len() - passed,
            Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX)).as_secs_f64()
        );
    }
}
