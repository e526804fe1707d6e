//! `loadgen`: the load tool (issue "performance"). Not written yet: it exits
//! with an error rather than pretend to measure anything.

fn main() {
    eprintln!("loadgen: not implemented yet (tracked by the performance issue)");
    std::process::exit(2);
}
