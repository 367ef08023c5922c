use super::*;

#[test]
fn exit_codes_follow_the_http_answer() {
    for (status, code) in [(200, 0), (400, 3), (401, 4), (403, 5), (503, 6), (500, 2)] {
        assert_eq!(exit_code(status), code, "{status}");
    }
}
