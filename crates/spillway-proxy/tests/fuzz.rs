//! The fuzz targets (`fuzz/`) on stable Rust: every corpus and regression input, and a few
//! thousand deterministic mutations of each, through `spillway_proxy::fuzz`. A panic fails.

use spillway_proxy::fuzz;

/// The inputs kept for `target` (`fuzz/corpus/<target>` and `fuzz/regressions/<target>`).
fn inputs(target: &str) -> Vec<Vec<u8>> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz");
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(format!("{root}/{dir}/{target}")) else { continue };
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().starts_with('.') {
                out.push(std::fs::read(e.path()).unwrap());
            }
        }
    }
    assert!(!out.is_empty(), "no corpus for {target}");
    out
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// `seed` changed a few ways: bytes flipped, replaced by interesting ones, inserted, removed,
/// runs duplicated.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    const INTERESTING: &[u8] = b"\r\n\0\xff:;, =\"[]{}0123456789-+";
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(5) {
            0 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => v.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
            3 if !v.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                v.drain(at.min(end)..end);
            }
            _ => {
                let end = (at + 1 + rng.below(64)).min(v.len());
                let run = v[at.min(end)..end].to_vec();
                v.splice(at..at, run);
            }
        }
    }
    v
}

fn run(target: &str, f: fn(&[u8]), rounds: usize) {
    let mut rng = Rng(0x5eed_0000 ^ target.len() as u64);
    for seed in inputs(target) {
        f(&seed);
        for _ in 0..rounds {
            f(&mutate(&seed, &mut rng));
        }
    }
}

#[test]
fn config() {
    run("config", fuzz::config, 20_000);
}

#[test]
fn upstream_response() {
    run("upstream_response", fuzz::upstream_response, 50_000);
}

#[test]
fn websocket_upgrade() {
    run("websocket_upgrade", fuzz::websocket_upgrade, 50_000);
}

#[test]
fn client_key() {
    run("client_key", fuzz::client_key, 50_000);
}

#[test]
fn admin_request() {
    run("admin_request", fuzz::admin_request, 30_000);
}
