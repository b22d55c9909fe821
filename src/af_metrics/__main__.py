from af_metrics.cli import main

main()
