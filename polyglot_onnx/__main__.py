import sys

from polyglot_onnx.cli import main

sys.exit(main())
