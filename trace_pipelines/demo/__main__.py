"""`python -m trace_pipelines.demo --out DIR ...`: generate the demo store from a shell."""

from trace_pipelines.demo.generate import main

raise SystemExit(main())
