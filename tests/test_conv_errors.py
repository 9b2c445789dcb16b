"""Bad conv arguments raise ValueError/TypeError naming the argument and the shapes, on
every backend, before any compiled code runs.

Every case runs in a subprocess (one per backend, all cases batched), so an input that
slipped past validation and crashed a kernel fails the test instead of killing pytest.
The subprocess prints one JSON line per case: [label, exception type, message].
"""

import json
from pathlib import Path


from helpers import run_isolated

ROOT = Path(__file__).resolve().parents[1]

# (label, call, expected exception, substrings the message must contain). In the calls,
# x is (2, 8, 8, 3) NHWC, w (3, 3, 3, 4) HWIO; x1/w1 and x3/w3 are conv1d/conv3d pairs.
CASES = [
    # wrong rank
    ("x rank 2", "conv2d(np.ones((8, 3)), w)", ValueError, ["x", "(8, 3)"]),
    ("x rank 5", "conv2d(np.ones((1, 2, 8, 8, 3)), w)", ValueError, ["x", "(1, 2, 8, 8, 3)"]),
    ("x scalar", "conv2d(1.0, w)", ValueError, ["x", "()"]),
    ("weight rank 3", "conv2d(x, np.ones((3, 3, 3)))", ValueError, ["weight", "(3, 3, 3)"]),
    ("weight rank 5", "conv2d(x, np.ones((1, 3, 3, 3, 4)))", ValueError, ["weight"]),
    ("conv1d x rank 4", "conv1d(x, w1)", ValueError, ["x", "(2, 8, 8, 3)"]),
    ("conv3d weight rank 4", "conv3d(x3, w)", ValueError, ["weight", "(3, 3, 3, 4)"]),
    # channel mismatch: expected vs got
    ("channels NHWC", "conv2d(x, np.ones((3, 3, 5, 4)))", ValueError,
     ["x", "5 channels", "got 3"]),
    ("channels NCHW", "conv2d(np.ones((2, 3, 8, 8)), np.ones((4, 5, 3, 3)), layout='NCHW')",
     ValueError, ["x", "5 channels", "got 3"]),
    ("channels conv1d", "conv1d(x1, np.ones((3, 2, 4)))", ValueError, ["x", "2 channels", "got 3"]),
    ("channels conv3d", "conv3d(x3, np.ones((3, 3, 3, 4, 4)))", ValueError,
     ["x", "4 channels", "got 3"]),
    ("channels with groups", "conv2d(x, np.ones((3, 3, 3, 6)), groups=3)", ValueError,
     ["x", "9 channels", "got 3"]),
    # groups
    ("groups not dividing C_in", "conv2d(x, np.ones((3, 3, 1, 4)), groups=2)", ValueError,
     ["groups", "(3)"]),
    ("groups not dividing C_out", "conv2d(x4, np.ones((3, 3, 2, 3)), groups=2)", ValueError,
     ["groups", "(3)"]),
    ("groups 0", "conv2d(x, w, groups=0)", ValueError, ["groups"]),
    ("groups -1", "conv2d(x, w, groups=-1)", ValueError, ["groups"]),
    ("groups float", "conv2d(x, w, groups=1.0)", TypeError, ["groups"]),
    ("groups bool", "conv2d(x, w, groups=True)", TypeError, ["groups"]),
    # zero-size dims
    ("zero kernel", "conv2d(x, np.ones((0, 3, 3, 4)))", ValueError, ["weight", "(0, 3, 3, 4)"]),
    ("zero C_in/groups", "conv2d(x, np.ones((3, 3, 0, 4)))", ValueError, ["weight", "(3, 3, 0, 4)"]),
    ("zero C_out", "conv2d(x, np.ones((3, 3, 3, 0)))", ValueError, ["weight", "(3, 3, 3, 0)"]),
    ("zero C_out NCHW", "conv2d(np.ones((2, 3, 8, 8)), np.ones((0, 3, 3, 3)), layout='NCHW')",
     ValueError, ["weight"]),
    ("zero x channels", "conv2d(np.ones((2, 8, 8, 0)), w)", ValueError, ["x", "(2, 8, 8, 0)"]),
    ("zero spatial, no padding", "conv2d(np.ones((2, 0, 8, 3)), w)", ValueError,
     ["kernel size", "(0, 8)"]),
    # stride, dilation, padding
    ("stride 0", "conv2d(x, w, stride=0)", ValueError, ["stride", "0"]),
    ("stride -1", "conv2d(x, w, stride=-1)", ValueError, ["stride", "-1"]),
    ("stride tuple 0", "conv2d(x, w, stride=(1, 0))", ValueError, ["stride[1]"]),
    ("stride tuple length", "conv2d(x, w, stride=(1, 1, 1))", ValueError, ["stride", "(1, 1, 1)"]),
    ("stride float", "conv2d(x, w, stride=1.0)", TypeError, ["stride"]),
    ("stride bool", "conv2d(x, w, stride=True)", TypeError, ["stride"]),
    ("stride bool in tuple", "conv2d(x, w, stride=(1, False))", TypeError, ["stride[1]"]),
    ("stride numpy bool", "conv2d(x, w, stride=np.True_)", TypeError, ["stride"]),
    ("stride None", "conv2d(x, w, stride=None)", TypeError, ["stride"]),
    ("dilation 0", "conv2d(x, w, dilation=0)", ValueError, ["dilation", "0"]),
    ("dilation -2", "conv3d(x3, w3, dilation=(1, 1, -2))", ValueError, ["dilation[2]"]),
    ("padding -1", "conv2d(x, w, padding=-1)", ValueError, ["padding", "-1"]),
    ("padding tuple -1", "conv1d(x1, w1, padding=(-1,))", ValueError, ["padding[0]"]),
    ("padding float", "conv2d(x, w, padding=1.5)", TypeError, ["padding"]),
    ("padding bad string", "conv2d(x, w, padding='SAME')", ValueError, ["padding", "'SAME'"]),
    ("same with stride 2", "conv2d(x, w, padding='same', stride=2)", ValueError,
     ["same", "stride"]),
    ("same with stride (1, 2)", "conv2d(x, w, padding='same', stride=(1, 2))", ValueError,
     ["same", "stride"]),
    # the (dilated) window does not fit the padded input
    ("kernel larger than input", "conv2d(np.ones((2, 4, 4, 3)), np.ones((5, 5, 3, 4)))",
     ValueError, ["kernel", "5", "(4, 4)"]),
    ("kernel larger than padded input", "conv1d(x1, np.ones((12, 3, 2)), padding=1)",
     ValueError, ["kernel", "12", "10"]),
    ("dilated kernel larger than input", "conv2d(x, w, dilation=(1, 4))", ValueError,
     ["kernel", "dilation 4", "9"]),
    ("conv3d kernel deeper than input", "conv3d(x3, np.ones((5, 1, 1, 3, 2)))", ValueError,
     ["kernel", "(4, 5, 6)"]),
    # bias
    ("bias too long", "conv2d(x, w, np.ones(5))", ValueError, ["bias", "(4,)", "(5,)"]),
    ("bias too short", "conv2d(x, w, np.ones(3))", ValueError, ["bias", "(4,)", "(3,)"]),
    ("bias 2-d", "conv2d(x, w, np.ones((1, 4)))", ValueError, ["bias", "(1, 4)"]),
    ("bias scalar", "conv2d(x, w, 1.0)", ValueError, ["bias", "()"]),
    ("bias junk", "conv2d(x, w, 'abc')", TypeError, ["bias"]),
    # absurd values
    ("dilation 1.25e12 float", "conv2d(x, w, dilation=1.25e12)", TypeError, ["dilation"]),
    ("dilation 1250000000000", "conv2d(x, w, dilation=1250000000000)", ValueError,
     ["dilation", "1250000000000"]),
    ("dilation 10**9", "conv2d(x, w, dilation=10**9)", ValueError, ["kernel", "dilation"]),
    ("stride 2**62", "conv2d(x, w, stride=2**62)", ValueError, ["stride", str(2**62)]),
    ("stride 2**64", "conv2d(x, w, stride=2**64)", ValueError, ["stride"]),
    ("padding 2**40", "conv2d(x, w, padding=2**40)", ValueError, ["padding", str(2**40)]),
    ("padding 2**30", "conv3d(x3, w3, padding=2**30)", ValueError, ["padding"]),
    ("padding 10**5 (terabytes)", "conv2d(x, w, padding=10**5)", ValueError,
     ["padding", "(2, 200008, 200008, 3)", "GiB"]),
    ("same with dilation 2**30", "conv2d(x, w, padding='same', dilation=2**30)", ValueError,
     ["padding"]),
    ("groups 2**40", "conv2d(x, w, groups=2**40)", ValueError, ["groups"]),
    # dtypes
    ("complex x", "conv2d(x.astype(complex), w)", TypeError, ["x", "complex128"]),
    ("complex weight", "conv2d(x, w.astype(np.complex64))", TypeError, ["weight", "complex64"]),
    ("complex bias", "conv2d(x, w, np.ones(4, complex))", TypeError, ["bias", "complex"]),
    ("object x", "conv2d(x.astype(object), w)", TypeError, ["x", "object"]),
    ("string x", "conv2d(np.full((2, 8, 8, 3), 'a'), w)", TypeError, ["x", "<U1"]),
    ("bytes weight", "conv2d(x, np.full((3, 3, 3, 4), b'a'))", TypeError, ["weight", "S1"]),
    ("datetime x", "conv2d(np.zeros((2, 8, 8, 3), 'datetime64[s]'), w)", TypeError, ["x"]),
    ("python complex scalar list", "conv1d([[[1j]]], [[[1.0]]])", TypeError, ["x"]),
    # non-array junk
    ("x None", "conv2d(None, w)", TypeError, ["x", "NoneType"]),
    ("x dict", "conv2d({'a': 1}, w)", TypeError, ["x", "dict"]),
    ("x string", "conv2d('image', w)", TypeError, ["x", "str"]),
    ("weight None", "conv2d(x, None)", TypeError, ["weight", "NoneType"]),
    ("x ragged list", "conv1d([[[1.0], [2.0, 3.0]]], w1)", TypeError, ["x"]),
    ("x object", "conv2d(object(), w)", TypeError, ["x", "object"]),
    # layout
    ("layout unknown", "conv2d(x, w, layout='NWHC')", ValueError, ["layout", "'NWHC'"]),
    ("layout of another rank", "conv2d(x, w, layout='NWC')", ValueError, ["layout", "'NWC'"]),
    ("layout None", "conv2d(x, w, layout=None)", ValueError, ["layout", "None"]),
    ("layout lower case", "conv3d(x3, w3, layout='ndhwc')", ValueError, ["layout"]),
    ("layout list", "conv1d(x1, w1, layout=['NWC'])", (ValueError, TypeError), ["layout"]),
]

SCRIPT = """
import json, sys
sys.path.insert(0, {root!r})
import numpy as np
import fastdl

x = np.ones((2, 8, 8, 3)); w = np.ones((3, 3, 3, 4)); x4 = np.ones((2, 8, 8, 4))
x1 = np.ones((2, 8, 3)); w1 = np.ones((3, 3, 2))
x3 = np.ones((1, 4, 5, 6, 3)); w3 = np.ones((2, 2, 2, 3, 2))
# Note every kernel launch: bad input must be rejected before any kernel runs.
module = fastdl._dispatch.kernels("conv", {backend!r})
real_kernel, launches = module.conv_ndhwc, []
def spy(*args):
    launches.append(1)
    return real_kernel(*args)
module.conv_ndhwc = spy
conv1d, conv2d, conv3d = (
    lambda *a, _name=name, **k: getattr(fastdl, _name)(*a, backend={backend!r}, **k)
    for name in ("conv1d", "conv2d", "conv3d"))
for label, call in {calls!r}:
    print(json.dumps([label, "started", "", False]), flush=True)
    launches.clear()
    try:
        eval(call)
    except Exception as exc:
        print(json.dumps([label, type(exc).__name__, str(exc), bool(launches)]), flush=True)
    else:
        print(json.dumps([label, "no error", "", bool(launches)]), flush=True)
print("done", flush=True)
"""


def test_bad_arguments_raise_cleanly(backend):
    calls = [(label, call) for label, call, _, _ in CASES]
    code, out, err = run_isolated(SCRIPT.format(root=str(ROOT), backend=backend, calls=calls))
    lines = out.splitlines()
    assert code == 0 and lines and lines[-1] == "done", (
        f"subprocess died (code {code}) after: {lines[-1:]}\nstderr: {err[-2000:]}")
    results = {}
    for line in lines[:-1]:
        label, kind, message, kernel_ran = json.loads(line)
        if kind != "started":
            results[label] = (kind, message, kernel_ran)
    problems = []
    for label, call, expected, substrings in CASES:
        kind, message, kernel_ran = results[label]
        if kernel_ran:
            problems.append(f"{label}: {call} reached the compiled kernel")
        names = [e.__name__ for e in (expected if isinstance(expected, tuple) else (expected,))]
        if kind not in names:
            problems.append(f"{label}: {call} raised {kind} ({message}); expected {names}")
            continue
        missing = [s for s in substrings if s not in message]
        if missing:
            problems.append(f"{label}: message {message!r} lacks {missing}")
    assert not problems, "\n".join(problems)


def test_valid_edge_cases_still_work(backend):
    """The validation is not over-eager: the borderline-legal calls next to the cases
    above succeed (in a subprocess too, since they sit right at the limits)."""
    code, out, err = run_isolated(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        import numpy as np
        import fastdl
        b = {backend!r}
        x = np.arange(2 * 8 * 8 * 3, dtype=np.float64).reshape(2, 8, 8, 3)
        # kernel exactly as large as the input
        print(fastdl.conv2d(x, np.ones((8, 8, 3, 2)), backend=b).shape)
        # a zero-size spatial dim that the padding makes room for: bias only
        print(fastdl.conv2d(np.ones((1, 0, 2, 3)), np.ones((1, 1, 3, 2)), np.array([1., 2.]),
                            padding=1, backend=b).tolist())
        # numpy integer arguments, a huge stride that still fits
        print(fastdl.conv2d(x, np.ones((3, 3, 3, 4)), stride=np.int64(2**31 - 1),
                            dilation=np.int32(3), backend=b).shape)
        # an empty batch
        print(fastdl.conv2d(x[:0], np.ones((3, 3, 3, 4)), backend=b).shape)
    """)
    assert code == 0, err[-2000:]
    assert out.splitlines() == [
        "(2, 1, 1, 2)",
        str([[[[1.0, 2.0]] * 4] * 2]),
        "(2, 1, 1, 4)",
        "(0, 6, 6, 4)",
    ]
