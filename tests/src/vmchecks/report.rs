//! One line per check and the final tally.

use std::fmt::Display;

/// The outcome of one check: `Err` carries why it failed.
pub type Outcome = Result<(), String>;

/// Turns a library error into a failure reason, naming the step.
pub trait Ctx<T> {
    /// `what: error`.
    fn ctx(self, what: &str) -> Result<T, String>;
}

impl<T, E: Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// Fails with `why` unless `cond` holds.
pub fn ensure(cond: bool, why: impl FnOnce() -> String) -> Outcome {
    if cond {
        Ok(())
    } else {
        Err(why())
    }
}

/// Counts and prints check results.
#[derive(Debug, Default)]
pub struct Report {
    passed: u32,
    failed: u32,
    skipped: u32,
}

impl Report {
    /// Records a check's outcome.
    pub fn check(&mut self, name: impl Display, outcome: Outcome) {
        match outcome {
            Ok(()) => {
                self.passed += 1;
                println!("ok      {name}");
            }
            Err(why) => {
                self.failed += 1;
                println!("FAILED  {name}: {why}");
            }
        }
    }

    /// Records a check that does not apply to this boot.
    pub fn skip(&mut self, name: impl Display, reason: impl Display) {
        self.skipped += 1;
        println!("skipped {name}: {reason}");
    }

    /// Prints an informational line (not counted).
    pub fn note(&self, text: impl Display) {
        println!("        {text}");
    }

    /// Whether anything failed.
    pub fn any_failed(&self) -> bool {
        self.failed > 0
    }

    /// The summary line.
    pub fn summary(&self) -> String {
        format!("{} passed, {} failed, {} skipped", self.passed, self.failed, self.skipped)
    }
}

/// A child process's ending: prints its one `result:` line and gives its exit code (0
/// when all held).
pub fn child_result(r: Outcome) -> i32 {
    match r {
        Ok(()) => {
            println!("result: ok");
            0
        }
        Err(e) => {
            println!("result: {e}");
            1
        }
    }
}
