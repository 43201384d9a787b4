//! Fuzzes the `/etc/passwd` reader of `bind --user NAME`: a user is found only on a line
//! of its own with numeric ids, the first such line wins, and a line made from the
//! answer is read back to the same ids.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfio_core::host::bind::parse_passwd_user;

fuzz_target!(|data: &[u8]| {
    let (user, rest) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"qemu"[..], data),
    };
    let user = String::from_utf8_lossy(user);
    let passwd = String::from_utf8_lossy(rest);
    match parse_passwd_user(&passwd, &user) {
        Some((uid, gid)) => {
            let line = passwd
                .lines()
                .find(|l| {
                    let f: Vec<&str> = l.splitn(5, ':').collect();
                    f.len() >= 4
                        && f[0] == user
                        && f[2].parse::<u32>().is_ok()
                        && f[3].parse::<u32>().is_ok()
                })
                .expect("a line names the user");
            let f: Vec<&str> = line.splitn(5, ':').collect();
            assert_eq!((f[2].parse().unwrap(), f[3].parse().unwrap()), (uid, gid));
            assert!(!user.contains(':') && !user.contains('\n'));
        }
        None => assert!(!passwd.lines().any(|l| {
            let f: Vec<&str> = l.splitn(5, ':').collect();
            f.len() >= 4
                && f[0] == user
                && f[2].parse::<u32>().is_ok()
                && f[3].parse::<u32>().is_ok()
        })),
    }
    // A well-formed line for the user, put first, is what is found.
    if !user.contains([':', '\n', '\r']) {
        let uid = data.len() as u32;
        let line = format!("{user}:x:{uid}:{}:gecos:/home:/bin/sh\n{passwd}", uid ^ 0xffff);
        assert_eq!(parse_passwd_user(&line, &user), Some((uid, uid ^ 0xffff)));
    }
});
