from transfer.segmentation.cli import main

main()
