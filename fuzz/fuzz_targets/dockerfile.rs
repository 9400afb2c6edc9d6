//! Dockerfiles (berth's own parser, `berth_cli::builder::dockerfile::parse`) on arbitrary
//! text: parsing never panics; an accepted file's instructions are known keywords, in
//! order of their lines, each line within the file; a refusal names a line of it.

#![no_main]

use berth_cli::builder::dockerfile::{parse, ParseError, INSTRUCTIONS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.lines().count().max(1);
    match parse(text) {
        Ok(instructions) => {
            let mut last = 0;
            for i in &instructions {
                assert!(INSTRUCTIONS.contains(&i.keyword.as_str()), "{}", i.keyword);
                assert!(i.line >= 1 && i.line <= lines, "line {} of {lines}", i.line);
                assert!(i.line > last, "instructions out of order");
                last = i.line;
            }
        }
        Err(ParseError::UnknownInstruction { line, .. } | ParseError::Invalid { line, .. }) => {
            assert!(line >= 1 && line <= lines, "error on line {line} of {lines}");
        }
    }
});
