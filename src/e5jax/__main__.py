import sys
from e5jax.cli import main
sys.exit(main())
