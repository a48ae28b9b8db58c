from ppo1.cli import main

main()
