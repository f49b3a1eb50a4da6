//! Cuts the power at every call of every store operation, checks every state
//! the disk could be left in, injects I/O errors at every call, and runs the
//! same enumeration against deliberately broken save protocols.
//!
//! ```text
//! cargo run --release --example crash_report
//! ```

use safestash_testkit::crash::{Protocol, explore_all};

fn main() {
    // Value sizes: under one sector, six sectors (every combination), and a value
    // written in several 64 KiB writes (a representative set of tears).
    let sizes = [40, 700, 1500, 2600, 200_000];
    println!("Crash and I/O-error enumeration on SimFs, values of {sizes:?} bytes\n");
    println!(
        "| operation | protocol | calls | crash points | crash states | I/O-error cases | violations |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    let (mut points, mut states, mut violations, mut io_cases) = (0, 0, 0, 0);
    let mut controls_ok = true;
    let results = explore_all(&sizes);
    for (scenario, protocol, r) in &results {
        println!(
            "| {scenario} | {protocol} | {} | {} | {} | {} | {} |",
            r.calls, r.crash_points, r.states, r.io_error_cases, r.violations
        );
        if *protocol == Protocol::Correct {
            points += r.crash_points;
            states += r.states;
            io_cases += r.io_error_cases;
            violations += r.violations;
        } else if r.violations == 0 {
            controls_ok = false;
        }
    }
    println!();
    for (scenario, protocol, r) in &results {
        if r.violations > 0 {
            let label = if *protocol == Protocol::Correct {
                "VIOLATION"
            } else {
                "negative control caught"
            };
            println!("{label}: {scenario} ({protocol}), e.g.:");
            for e in r.examples.iter().take(3) {
                println!("  - {e}");
            }
        }
    }
    println!(
        "\nnegative controls: {}",
        if controls_ok {
            "every broken protocol was caught"
        } else {
            "A BROKEN PROTOCOL WENT UNDETECTED"
        }
    );
    println!("I/O-error cases: {io_cases}");
    println!("crash points: {points}, states: {states}, violations: {violations}");
    if violations > 0 || !controls_ok {
        std::process::exit(1);
    }
}
