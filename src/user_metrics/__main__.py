from user_metrics.cli.main import main

raise SystemExit(main())
