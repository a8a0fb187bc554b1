from transfer.detection.cli import main

main()
