"""``python -m mnist_course`` is the same as the ``mnist-course`` command."""

import sys

from mnist_course.cli import main

sys.exit(main())
