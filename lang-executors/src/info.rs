//! The languages as data: names, aliases, source file names and the hints `auto` detection
//! weighs (one scoring rule for all, [`LanguageInfo::detect`]).

use vana_sandbox_core::LanguageInfo;

/// Python 3.
pub const PYTHON: LanguageInfo = LanguageInfo {
    name: "python",
    aliases: &["py", "python3"],
    source_file: "main.py",
    extensions: &[".py"],
    shebangs: &["python"],
    keywords: &[
        ("def ", 25),
        ("import ", 20),
        ("print(", 25),
        ("self.", 10),
        ("elif ", 20),
        (":\n    ", 10),
    ],
};

/// JavaScript on Node.js.
pub const JAVASCRIPT: LanguageInfo = LanguageInfo {
    name: "javascript",
    aliases: &["js", "node", "nodejs"],
    source_file: "main.js",
    extensions: &[".js", ".mjs", ".cjs"],
    shebangs: &["node"],
    keywords: &[
        ("console.log", 40),
        ("require(", 30),
        ("=>", 10),
        ("const ", 15),
        ("let ", 10),
        ("function ", 15),
        ("};", 10),
    ],
};

/// Bash.
pub const BASH: LanguageInfo = LanguageInfo {
    name: "bash",
    aliases: &["sh", "shell"],
    source_file: "main.sh",
    extensions: &[".sh", ".bash"],
    shebangs: &["bash", "/sh"],
    keywords: &[
        ("echo ", 25),
        ("\nfi", 20),
        ("done", 15),
        ("$(", 15),
        ("${", 10),
        ("then", 10),
    ],
};

/// Go.
pub const GO: LanguageInfo = LanguageInfo {
    name: "go",
    aliases: &["golang"],
    source_file: "main.go",
    extensions: &[".go"],
    shebangs: &[],
    keywords: &[("package main", 60), ("func main()", 30), ("fmt.Print", 10)],
};

/// Rust.
pub const RUST: LanguageInfo = LanguageInfo {
    name: "rust",
    aliases: &["rs"],
    source_file: "main.rs",
    extensions: &[".rs"],
    shebangs: &[],
    keywords: &[("fn main(", 60), ("println!", 30), ("let mut ", 20)],
};

/// Every language, for tools that list them (the CLI's extension guess).
pub const ALL: [&LanguageInfo; 5] = [&PYTHON, &JAVASCRIPT, &BASH, &GO, &RUST];

/// The language a file name's extension names, if any.
pub fn by_extension(file: &str) -> Option<&'static LanguageInfo> {
    ALL.into_iter()
        .find(|l| l.extensions.iter().any(|e| file.ends_with(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_scores() {
        assert!(GO.detect("package main\nfunc main() {}", &[]) >= 90);
        assert!(RUST.detect("fn main() { println!(\"x\"); }", &[]) >= 90);
        assert_eq!(RUST.detect("print(1)", &[]), 0);
        assert_eq!(PYTHON.detect("#!/bin/bash\necho", &[]), 0);
        assert_eq!(BASH.detect("#!/bin/bash\necho", &[]), 100);
        assert_eq!(by_extension("x.mjs").map(|l| l.name), Some("javascript"));
        assert_eq!(by_extension("x.txt"), None);
    }
}
