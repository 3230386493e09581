//! What the binary's end-to-end tests share: the binary, a child process that dies with the
//! test, `spillway serve` started on a config, and a fresh temporary directory.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// Kills the process when the test ends, pass or fail.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn spillway() -> Command {
    Command::new(env!("CARGO_BIN_EXE_spillway"))
}

/// Starts `spillway serve` on `config` and returns it with its (first) listener's and its admin
/// listener's addresses.
pub fn serve(config: &std::path::Path) -> (Child, String, String) {
    serve_with(config, |_| {})
}

/// As [`serve`], with `setup` (environment variables, say) applied to the command first.
pub fn serve_with(config: &std::path::Path, setup: impl FnOnce(&mut Command)) -> (Child, String, String) {
    let mut command = spillway();
    setup(command.args(["serve", "--config"]).arg(config).stdout(Stdio::piped()).stderr(Stdio::null()));
    let mut child = Child(command.spawn().unwrap());
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let (mut web, mut admin) = (String::new(), String::new());
    out.read_line(&mut web).unwrap();
    out.read_line(&mut admin).unwrap();
    let web = web.trim().rsplit("http://").next().unwrap().to_string();
    let admin = admin.trim().rsplit("http://").next().unwrap().to_string();
    (child, web, admin)
}

/// A fresh directory of its own for the test named `name`.
pub fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("spillway-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
