//! The cost of reading one HL7 message: custodian's guarded parse (the guard, hl7-parser's
//! split, custodian's decoded tree) against hl7-parser's split alone, in the same run.
//!
//! `cargo bench --bench hl7_parse` (`-- --rounds N --iters N`). The message is the
//! store_economy benchmark's 5-result screening ORU (about 520 bytes). Each round parses it
//! `iters` times with each parser, alternating; the medians of the rounds are reported.

use std::hint::black_box;
use std::time::Instant;

// The daemon's allocator (src/main.rs): the parse allocates, and the measure is the daemon's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MESSAGE: &str = "MSH|^~\\&|ANALYZER|TOXLAB|CUSTODIAN|TOXLAB|20261201101500||ORU^R01^ORU_R01|P000000042K00|P|2.5.1\r\
PID|1||P000000042^^^TOXLAB^SID\r\
OBR|1|P000000042^TOXLAB|P000000042^LAB|DAT^Drugs of abuse testing^L|||20261201083000|||||||20261201090000|URINE|||||A||20261201101500|||F\r\
OBX|1|NM|THC50^THC50^L||12|ng/mL||N|||F|||20261201101500\r\
OBX|2|NM|COC300^COC300^L||42|ng/mL||N|||F|||20261201101500\r\
OBX|3|NM|OPI2000^OPI2000^L||132|ng/mL||N|||F|||20261201101500\r\
OBX|4|NM|AMP1000^AMP1000^L||32|ng/mL||N|||F|||20261201101500\r\
OBX|5|NM|PCP25^PCP25^L||4|ng/mL||N|||F|||20261201101500\r";

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} N")))
        .unwrap_or(default)
}

/// Nanoseconds per call of `f`, over `iters` calls.
fn time(iters: usize, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_nanos() as f64 / iters as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds = arg("--rounds", 15);
    let iters = arg("--iters", 20_000);
    let bytes = MESSAGE.as_bytes();
    // Both parsers must accept the message, and ours must see what the crate sees.
    let ours = custodian::codec::hl7::parse(bytes).expect("custodian parses the message");
    let theirs = hl7_parser::Message::parse(MESSAGE).expect("hl7-parser parses the message");
    assert_eq!(ours.segments().len(), theirs.segments.len());
    assert_eq!(ours.get("OBX(3)-5"), Some("132"));
    assert_eq!(ours.header().control_id, "P000000042K00");

    let (mut crate_ns, mut guarded_ns) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        crate_ns.push(time(iters, || {
            black_box(hl7_parser::Message::parse(black_box(MESSAGE)).is_ok());
        }));
        guarded_ns.push(time(iters, || {
            black_box(custodian::codec::hl7::parse(black_box(bytes)).is_ok());
        }));
    }
    let (c, g) = (median(crate_ns), median(guarded_ns));
    println!(
        "hl7_parse: {} bytes, {} segments; {rounds} rounds of {iters} parses each (medians)",
        bytes.len(),
        ours.segments().len()
    );
    println!("| parser | per message | ratio |");
    println!("|---|---:|---:|");
    println!("| hl7-parser 0.3 alone (its tree, no guard) | {c:.0} ns | 1.00x |");
    println!(
        "| custodian::codec::hl7::parse (guard, split, decoded tree) | {g:.0} ns | {:.2}x |",
        g / c
    );
}
