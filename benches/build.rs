//! Builds the raw-C baseline the benchmarks compare against.

fn main() {
    println!("cargo:rerun-if-changed=c/baseline.c");
    cc::Build::new().file("c/baseline.c").opt_level(2).warnings(true).compile("vfio_baseline");
}
