"""Run Python unittest modules the way ctest needs: a skip must not look like a pass.

    python3 -m berth_unittest MODULE [MODULE...]

Runs the tests verbosely, then prints one "BERTH-SKIP: <test>: <reason>" line per skipped
test. Exit status: 1 if anything failed; else 77 if anything was skipped (CMake sets
SKIP_RETURN_CODE 77, so ctest reports the test as "Not Run (Skipped)", not "Passed"); else 0.
Under CI (environment CI=true) a skip is a failure (exit 1): a missing tool or capability
must make the run red, not quietly thinner.
"""
import os
import sys
import unittest

SKIP_CODE = 77


def main(argv):
    if not argv:
        sys.stderr.write(__doc__)
        return 2
    loader = unittest.TestLoader()
    suite = unittest.TestSuite(loader.loadTestsFromName(m) for m in argv)
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    sys.stdout.flush()
    if result.testsRun == 0:
        print("BERTH-FAIL: no test ran in %s" % " ".join(argv))
        return 1
    for test, reason in result.skipped:
        print("BERTH-SKIP: %s: %s" % (test.id() if hasattr(test, "id") else test, reason))
    if not result.wasSuccessful():
        return 1
    if result.skipped:
        if os.environ.get("CI", "").lower() == "true":
            print("BERTH-FAIL: %d test(s) skipped, and CI=true allows no skip" %
                  len(result.skipped))
            return 1
        return SKIP_CODE
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
