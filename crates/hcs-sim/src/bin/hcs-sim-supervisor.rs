//! `hcs-sim-supervisor`: the per-system supervisor of the simulator's host processes (see
//! `hcs_sim::supervisor`), as a program of its own. Its link to the simulator is its standard
//! input; it is not meant to be started by hand.

fn main() {
    std::process::exit(hcs_sim::supervisor::main());
}
