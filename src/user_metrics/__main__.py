from user_metrics.cli import main

raise SystemExit(main())
