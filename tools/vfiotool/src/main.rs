//! `vfiotool`: the command line.

fn main() {
    std::process::exit(vfiotool::main_with_env());
}
