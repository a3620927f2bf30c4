"""Identity: accounts, passwords, memberships and sign-in of the people who use Yiyang."""
