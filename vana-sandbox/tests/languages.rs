//! The five languages end to end: hello world and stdin in each, compile errors, compile steps
//! that break their limits, the compile cache, multi-file programs, args/env, and `auto`.
//! Needs root, the Rust toolchain, and Go (scripts/test.sh installs golang-go).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use vana_sandbox::{
    lang, DirCompileCache, Engine, ExecutionRequest, ExecutionResult, FileSpec, NativeExecutor,
    PolicyConfig, Status,
};

fn engine_with(policy: PolicyConfig, cache_dir: &str) -> Engine {
    require_root();
    let dir = std::env::temp_dir().join(format!("{cache_dir}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Engine::builder()
        .executor(Arc::new(NativeExecutor::new().expect("native")))
        .policy(Arc::new(policy))
        .languages(lang::installed())
        .compile_cache(Arc::new(
            DirCompileCache::new(dir, 256 << 20).expect("cache"),
        ))
        .build()
        .expect("engine")
}

/// Compilers may use both cores here, so that the suite stays quick.
fn fast_compile_policy() -> PolicyConfig {
    let mut p = PolicyConfig::default();
    p.compile.cpus = vana_sandbox::Cores::new(2.0).expect("cores");
    p
}

fn exec(e: &Engine, r: ExecutionRequest) -> ExecutionResult {
    rt().block_on(e.execute(r)).expect("engine")
}

const HELLO: [(&str, &str); 5] = [
    ("python", "print('Hello, World!')"),
    ("javascript", "console.log('Hello, World!')"),
    ("bash", "echo 'Hello, World!'"),
    (
        "go",
        "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"Hello, World!\")\n}\n",
    ),
    ("rust", "fn main() {\n    println!(\"Hello, World!\");\n}\n"),
];

const SUM_STDIN: [(&str, &str); 5] = [
    ("python", "import sys\nprint(sum(int(l) for l in sys.stdin if l.strip()))\n"),
    ("javascript", "const lines = require('fs').readFileSync(0, 'utf8').split('\\n').filter(Boolean);\nconsole.log(lines.reduce((a, l) => a + Number(l), 0));\n"),
    ("bash", "s=0\nwhile read -r n; do s=$((s + n)); done\necho $s\n"),
    ("go", "package main\n\nimport (\n\t\"bufio\"\n\t\"fmt\"\n\t\"os\"\n\t\"strconv\"\n)\n\nfunc main() {\n\ts := 0\n\tsc := bufio.NewScanner(os.Stdin)\n\tfor sc.Scan() {\n\t\tn, _ := strconv.Atoi(sc.Text())\n\t\ts += n\n\t}\n\tfmt.Println(s)\n}\n"),
    ("rust", "use std::io::BufRead;\nfn main() {\n    let s: i64 = std::io::stdin().lock().lines().map(|l| l.unwrap().trim().parse::<i64>().unwrap_or(0)).sum();\n    println!(\"{s}\");\n}\n"),
];

#[test]
fn hello_world_in_every_language() {
    let _g = serial();
    let e = engine_with(fast_compile_policy(), "vana-lang-hello");
    for (language, code) in HELLO {
        let r = exec(&e, req(language, code));
        assert_eq!(r.status, Status::Success, "{language}: {r:#?}");
        assert_eq!(r.output, "Hello, World!\n", "{language}");
        assert_eq!(r.language, language);
        let compiled = matches!(language, "go" | "rust");
        assert_eq!(r.compile.is_some(), compiled, "{language}");
    }
    assert_no_leftovers();
}

#[test]
fn stdin_in_every_language() {
    let _g = serial();
    let e = engine_with(fast_compile_policy(), "vana-lang-stdin");
    for (language, code) in SUM_STDIN {
        let mut r = req(language, code);
        r.inputs = Some(vec!["10".into(), "20".into(), "12".into()]);
        let r = exec(&e, r);
        assert_eq!(r.status, Status::Success, "{language}: {r:#?}");
        assert_eq!(r.output, "42\n", "{language}");
    }
    assert_no_leftovers();
}

#[test]
fn compile_errors_carry_the_compilers_message() {
    let _g = serial();
    let e = engine_with(fast_compile_policy(), "vana-lang-cerr");
    let r = exec(&e, req("rust", "fn main() { let x: i32 = \"nope\"; }"));
    assert_eq!(r.status, Status::CompileError, "{r:#?}");
    let c = r.compile.as_ref().expect("compile report");
    assert_eq!(c.status, Status::Error);
    assert!(
        r.error
            .as_deref()
            .unwrap_or("")
            .contains("mismatched types"),
        "{r:#?}"
    );
    assert!(r.exit_code.is_none() && r.output.is_empty());

    let r = exec(
        &e,
        req(
            "go",
            "package main\n\nfunc main() {\n\tundefinedThing()\n}\n",
        ),
    );
    assert_eq!(r.status, Status::CompileError, "{r:#?}");
    assert!(
        r.error
            .as_deref()
            .unwrap_or("")
            .contains("undefined: undefinedThing"),
        "{r:#?}"
    );
    assert_no_leftovers();
}

#[test]
fn rust_macro_expansion_bomb_stops_at_the_compile_limits() {
    let _g = serial();
    let mut p = fast_compile_policy();
    p.compile.memory = vana_sandbox::Bytes::mib(256);
    p.compile.timeout = std::time::Duration::from_secs_f64(20.0);
    let e = engine_with(p, "vana-lang-bomb");
    let code = "macro_rules! bomb { () => {}; ($t:tt $($rest:tt)*) => { bomb!($($rest)* $($rest)*); }; }\nfn main() { bomb!(a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a); }\n";
    let r = exec(&e, req("rust", code));
    assert_eq!(r.status, Status::CompileError, "{r:#?}");
    let c = r.compile.as_ref().expect("compile report");
    assert!(
        matches!(c.status, Status::MemoryLimit | Status::Timeout),
        "{c:#?}"
    );
    assert!(
        r.error
            .as_deref()
            .unwrap_or("")
            .contains("the compile step stopped at its limits"),
        "{r:#?}"
    );
    assert_no_leftovers();
}

#[test]
fn go_build_over_its_memory_is_a_clear_status() {
    let _g = serial();
    // The toolchain's files in the page cache first (a build with the usual limits): a sandbox
    // pays for the file pages it reads in, and when Go's are not cached a 24 MiB build spends
    // its time evicting and re-reading them until the compile timeout (120 s) instead of
    // running out of memory — seen once here after a full suite had pushed them out.
    let warm = exec(
        &engine_with(fast_compile_policy(), "vana-lang-gomem-warm"),
        req("go", HELLO[3].1),
    );
    assert_eq!(warm.status, Status::Success, "{warm:#?}");
    let mut p = fast_compile_policy();
    p.compile.memory = vana_sandbox::Bytes::mib(24);
    let e = engine_with(p, "vana-lang-gomem");
    let r = exec(&e, req("go", HELLO[3].1));
    assert_eq!(r.status, Status::CompileError, "{r:#?}");
    assert_eq!(
        r.compile.as_ref().map(|c| c.status),
        Some(Status::MemoryLimit),
        "{r:#?}"
    );
    assert!(
        r.error.as_deref().unwrap_or("").contains("out of memory"),
        "{r:#?}"
    );
    assert_no_leftovers();
}

#[test]
fn second_run_of_the_same_rust_program_does_not_invoke_rustc() {
    let _g = serial();
    let e = engine_with(fast_compile_policy(), "vana-lang-cache");
    let code = "fn main() { println!(\"cached {}\", std::env::args().count()); }";
    let first = exec(&e, req("rust", code));
    assert_eq!(first.status, Status::Success, "{first:#?}");
    let c1 = first.compile.clone().expect("compile");
    assert!(!c1.cached && c1.execution_time > 0.0, "{c1:#?}");
    let mut again = req("rust", code);
    again.args = vec!["x".into()];
    let second = exec(&e, again);
    assert_eq!(second.status, Status::Success, "{second:#?}");
    assert_eq!(second.output, "cached 2\n");
    let c2 = second.compile.expect("compile");
    assert!(c2.cached, "{c2:#?}");
    assert_eq!(c2.execution_time, 0.0);
    // A different source is a different key.
    let other = exec(&e, req("rust", "fn main() { println!(\"other\"); }"));
    assert!(!other.compile.expect("compile").cached);
    assert_no_leftovers();
}

#[test]
fn multi_file_programs_args_and_env() {
    let _g = serial();
    let e = engine_with(fast_compile_policy(), "vana-lang-multi");
    let mut r = req("go", "package main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n)\n\nfunc main() {\n\tfmt.Println(greet(os.Args[1]), os.Getenv(\"MODE\"))\n}\n");
    r.files = vec![FileSpec {
        path: "greet.go".into(),
        content: Some(
            "package main\n\nfunc greet(n string) string { return \"hi \" + n }\n".into(),
        ),
        content_base64: None,
    }];
    r.args = vec!["go".into()];
    r.env.insert("MODE".into(), "test".into());
    let res = exec(&e, r);
    assert_eq!(res.status, Status::Success, "{res:#?}");
    assert_eq!(res.output, "hi go test\n");

    let mut r = req("python", "import sys, os\nfrom lib.util import twice\nprint(twice(int(sys.argv[1])), os.environ['MODE'], open('data.txt').read().strip())\n");
    r.files = vec![
        FileSpec {
            path: "lib/__init__.py".into(),
            content: Some(String::new()),
            content_base64: None,
        },
        FileSpec {
            path: "lib/util.py".into(),
            content: Some("def twice(x):\n    return 2 * x\n".into()),
            content_base64: None,
        },
        FileSpec {
            path: "data.txt".into(),
            content_base64: Some("ZnJvbSBhIGZpbGUK".into()),
            content: None,
        },
    ];
    r.args = vec!["21".into()];
    r.env.insert("MODE".into(), "py".into());
    let res = exec(&e, r);
    assert_eq!(res.status, Status::Success, "{res:#?}");
    assert_eq!(res.output, "42 py from a file\n");
    assert_no_leftovers();
}

#[test]
fn auto_detects_the_language_or_says_it_is_unsure() {
    let _g = serial();
    let e = engine_with(fast_compile_policy(), "vana-lang-auto");
    let cases = [
        ("import math\nprint(math.floor(4.2))\n", "python", "4\n"),
        (
            "const x = [1, 2].map(n => n * 2);\nconsole.log(x.join(','));\n",
            "javascript",
            "2,4\n",
        ),
        ("#!/bin/bash\necho auto\n", "bash", "auto\n"),
        (
            "fn main() {\n    println!(\"auto\");\n}\n",
            "rust",
            "auto\n",
        ),
    ];
    for (code, language, out) in cases {
        let r = exec(&e, req("auto", code));
        assert_eq!(r.language, language, "{code}: {r:#?}");
        assert_eq!(r.status, Status::Success, "{r:#?}");
        assert_eq!(r.output, out);
    }
    let r = exec(&e, req("auto", "x = 1\n"));
    assert_eq!(r.status, Status::Rejected, "{r:#?}");
    assert!(
        r.error
            .as_deref()
            .unwrap_or("")
            .contains("cannot tell the language"),
        "{r:#?}"
    );
}

#[test]
fn tenant_scoped_cache_is_not_shared_across_tenants() {
    let _g = serial();
    let mut p = fast_compile_policy();
    p.compile.cache_scope = vana_sandbox::CacheScope::Tenant;
    let e = engine_with(p, "vana-lang-tenant");
    let code = "fn main() { println!(\"tenant\"); }";
    let run_as = |t: &str| {
        rt().block_on(e.execute_as(t, req("rust", code)))
            .expect("engine")
    };
    let a1 = run_as("alpha");
    assert_eq!(a1.status, Status::Success, "{a1:#?}");
    assert!(!a1.compile.expect("compile").cached);
    let b1 = run_as("beta");
    assert!(
        !b1.compile.expect("compile").cached,
        "another tenant's artifact was served"
    );
    let a2 = run_as("alpha");
    assert!(a2.compile.expect("compile").cached);
    let mut off = fast_compile_policy();
    off.compile.cache_scope = vana_sandbox::CacheScope::Off;
    let e = engine_with(off, "vana-lang-off");
    for _ in 0..2 {
        let r = exec(&e, req("rust", code));
        assert!(!r.compile.expect("compile").cached);
    }
    assert_no_leftovers();
}
