//! Support for the benchmarks: the raw-C baseline's bindings, and an interleaved paired
//! runner that measures several implementations of one operation round-robin, so that
//! drift on a noisy machine (or under TCG) affects them alike and their ratios hold.

#![warn(missing_docs)]

use std::time::Instant;

/// The raw-C baseline (`c/baseline.c`): the same kernel calls with nothing around them.
/// Each returns the ioctl's result or `-errno`.
pub mod c {
    #[allow(missing_docs)]
    extern "C" {
        pub fn vb_api_version(container: i32) -> i64;
        pub fn vb_dma_map(container: i32, vaddr: u64, iova: u64, size: u64) -> i64;
        pub fn vb_dma_unmap(container: i32, iova: u64, size: u64) -> i64;
        pub fn vb_ioas_map(iommufd: i32, ioas: u32, vaddr: u64, iova: u64, size: u64) -> i64;
        pub fn vb_ioas_unmap(iommufd: i32, ioas: u32, iova: u64, size: u64) -> i64;
        pub fn vb_irq_trigger(device: i32, index: u32, start: u32, count: u32) -> i64;
        pub fn vb_irq_eventfds(
            device: i32,
            index: u32,
            start: u32,
            count: u32,
            fds: *const i32,
        ) -> i64;
        pub fn vb_irq_disable(device: i32, index: u32) -> i64;
        pub fn vb_pread32(device: i32, offset: u64, out: *mut u32) -> i64;
        pub fn vb_mmio_read32(p: *const u32) -> u32;
    }
}

/// One implementation of an operation, as a closure doing it once.
pub struct Candidate<'a> {
    /// Its name in the report ("vfio-core", "C", "vfio-ioctls").
    pub name: &'static str,
    /// Does the operation once.
    pub run: Box<dyn FnMut() + 'a>,
}

impl<'a> Candidate<'a> {
    /// A candidate from a closure.
    pub fn new(name: &'static str, run: impl FnMut() + 'a) -> Self {
        Candidate { name, run: Box::new(run) }
    }
}

/// The result of one paired comparison.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Comparison {
    /// The operation.
    pub operation: String,
    /// `(candidate, median ns per operation)`, in the order given.
    pub medians: Vec<(String, f64)>,
    /// Rounds measured.
    pub rounds: usize,
    /// Operations per round and candidate.
    pub iters: u64,
}

impl Comparison {
    /// The median of a candidate.
    pub fn median(&self, name: &str) -> Option<f64> {
        self.medians.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// `a / b` of two candidates' medians.
    pub fn ratio(&self, a: &str, b: &str) -> Option<f64> {
        Some(self.median(a)? / self.median(b)?)
    }
}

/// Measures every candidate `rounds` times, `iters` operations each time, rotating the
/// order every round; returns the median time per operation of each.
pub fn compare(
    operation: &str,
    candidates: &mut [Candidate<'_>],
    rounds: usize,
    iters: u64,
) -> Comparison {
    let n = candidates.len();
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); n];
    // Warm-up: one round each.
    for c in candidates.iter_mut() {
        for _ in 0..iters {
            (c.run)();
        }
    }
    for round in 0..rounds {
        for k in 0..n {
            let i = (round + k) % n;
            let c = &mut candidates[i];
            let t = Instant::now();
            for _ in 0..iters {
                (c.run)();
            }
            samples[i].push(t.elapsed().as_nanos() as f64 / iters as f64);
        }
    }
    let medians = candidates
        .iter()
        .zip(samples.iter_mut())
        .map(|(c, s)| {
            s.sort_by(|a, b| a.total_cmp(b));
            (c.name.to_string(), s[s.len() / 2])
        })
        .collect();
    Comparison { operation: operation.to_string(), medians, rounds, iters }
}

/// Formats comparisons as a Markdown table with ratios to C and to vfio-ioctls.
pub fn table(rows: &[Comparison]) -> String {
    let mut s = String::from(
        "| operation | vfio-core (ns) | C (ns) | vfio-ioctls (ns) | vfio-core / C | vfio-core / vfio-ioctls |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    let f = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.0}"));
    let r = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.3}"));
    for c in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            c.operation,
            f(c.median("vfio-core")),
            f(c.median("C")),
            f(c.median("vfio-ioctls")),
            r(c.ratio("vfio-core", "C")),
            r(c.ratio("vfio-core", "vfio-ioctls")),
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_orders_candidates_by_cost() {
        let mut x = 0u64;
        let mut y = 0u64;
        let mut cands = [
            Candidate::new("cheap", || x = std::hint::black_box(x + 1)),
            Candidate::new("dear", || {
                for _ in 0..200 {
                    y = std::hint::black_box(y.wrapping_mul(31).wrapping_add(7));
                }
            }),
        ];
        let c = compare("t", &mut cands, 5, 1000);
        assert_eq!(c.medians.len(), 2);
        assert!(c.ratio("dear", "cheap").unwrap() > 1.0);
        assert!(table(&[c]).contains("| t |"));
    }

    #[test]
    fn c_baseline_reports_errno() {
        // SAFETY: an invalid fd makes ioctl fail with EBADF without touching memory.
        assert_eq!(unsafe { c::vb_api_version(-1) }, -(libc::EBADF as i64));
        let mut v = 0u32;
        // SAFETY: as above; `v` is a valid out pointer.
        assert_eq!(unsafe { c::vb_pread32(-1, 0, &mut v) }, -(libc::EBADF as i64));
    }
}
